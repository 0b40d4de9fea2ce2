// A strict JSON (RFC 8259) parser for config files and the admin API's bodies. JSON.parse is
// not enough here: on Node 20 its errors often carry no position ("Unexpected token '}', ...
// is not valid JSON"), and it silently keeps the last of two duplicate keys, so a config with
// `"port"` written twice would run on whichever came last. Both become errors that name the
// line and column, as do bytes that are not UTF-8 (decoding would put U+FFFD in a value the
// operator never wrote), numbers a double cannot hold (1e400 would read as Infinity and be
// reported as `null`), and nesting deeper than any config or body has (this parser recurses).

import { isUtf8 } from 'node:buffer'
import type { ConfigIssue } from './types.js'
import { joinPath } from './validate.js'

export type ParsedJson = { ok: true; value: unknown } | { ok: false; issue: ConfigIssue }

/** Deepest nesting of objects and arrays accepted; a config needs 5. */
const MAX_DEPTH = 256

/** `bytes` as JSON text: UTF-8 (RFC 8259 section 8.1) or an issue naming the first bad byte. */
export function parseJsonBytes(bytes: Uint8Array): ParsedJson {
  if (!isUtf8(bytes)) {
    const at = firstInvalidUtf8(bytes)
    let line = 1
    let lineStart = 0
    for (let i = 0; i < at; i++) if (bytes[i] === 0x0a) { line++; lineStart = i + 1 }
    const byte = bytes[at].toString(16).padStart(2, '0')
    return { ok: false, issue: { path: '', message: `invalid JSON at line ${line}, column ${at - lineStart + 1}: byte 0x${byte} is not UTF-8 text` } }
  }
  return parseJson(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'))
}

/** Offset of the first byte that does not start a well-formed UTF-8 sequence (Unicode 15, table 3-7); -1: none. */
function firstInvalidUtf8(b: Uint8Array): number {
  for (let i = 0; i < b.length;) {
    const c = b[i]
    const more = c < 0x80 ? 0 : c >= 0xc2 && c <= 0xdf ? 1 : c >= 0xe0 && c <= 0xef ? 2 : c >= 0xf0 && c <= 0xf4 ? 3 : -1
    if (more < 0) return i
    // The second byte's range excludes overlong forms, surrogates and code points past U+10FFFF.
    const low = c === 0xe0 ? 0xa0 : c === 0xf0 ? 0x90 : 0x80
    const high = c === 0xed ? 0x9f : c === 0xf4 ? 0x8f : 0xbf
    for (let k = 1; k <= more; k++) {
      const d = b[i + k]
      if (d === undefined || d < (k === 1 ? low : 0x80) || d > (k === 1 ? high : 0xbf)) return i
    }
    i += more + 1
  }
  return -1
}

export function parseJson(text: string): ParsedJson {
  const parser = new Parser(text.charCodeAt(0) === 0xfeff ? text.slice(1) : text)
  try {
    parser.skipSpace()
    const value = parser.value('')
    parser.skipSpace()
    if (parser.pos < parser.text.length) parser.fail('unexpected text after the end of the document')
    return { ok: true, value }
  } catch (err) {
    if (err instanceof JsonSyntaxError) return { ok: false, issue: { path: err.path, message: err.message } }
    throw err
  }
}

class JsonSyntaxError extends Error {
  constructor(readonly path: string, message: string) {
    super(message)
  }
}

const NUMBER = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y

class Parser {
  pos = 0
  private depth = 0
  constructor(readonly text: string) {}

  value(path: string): unknown {
    const c = this.text[this.pos]
    switch (c) {
      case '{':
      case '[': {
        if (++this.depth > MAX_DEPTH) this.fail(`nested deeper than ${MAX_DEPTH} levels`)
        const value = c === '{' ? this.object(path) : this.array(path)
        this.depth--
        return value
      }
      case '"': return this.string()
      case 't': return this.literal('true', true)
      case 'f': return this.literal('false', false)
      case 'n': return this.literal('null', null)
      case undefined: return this.fail('unexpected end of input, expected a value')
      default:
        if (c === '-' || (c >= '0' && c <= '9')) return this.number()
        return this.fail(`unexpected ${describe(c)}, expected a value`)
    }
  }

  object(path: string): Record<string, unknown> {
    const out: Record<string, unknown> = {}
    this.pos++
    this.skipSpace()
    if (this.text[this.pos] === '}') { this.pos++; return out }
    for (;;) {
      if (this.text[this.pos] !== '"') this.fail(`${this.found()}, expected a double-quoted property name`)
      const keyAt = this.pos
      const key = this.string()
      const keyPath = joinPath(path, key)
      if (Object.hasOwn(out, key)) {
        const { line, column } = this.lineColumn(keyAt)
        throw new JsonSyntaxError(keyPath, `duplicate key "${key}" at line ${line}, column ${column}`)
      }
      this.skipSpace()
      if (this.text[this.pos] !== ':') this.fail(`${this.found()}, expected ":" after property name`)
      this.pos++
      this.skipSpace()
      // defineProperty: a key "__proto__" stays a plain key (then rejected as unknown).
      Object.defineProperty(out, key, { value: this.value(keyPath), enumerable: true, writable: true, configurable: true })
      this.skipSpace()
      const c = this.text[this.pos]
      this.pos++
      if (c === '}') return out
      if (c !== ',') { this.pos--; this.fail(`${this.found()}, expected "," or "}" after property value`) }
      this.skipSpace()
    }
  }

  array(path: string): unknown[] {
    const out: unknown[] = []
    this.pos++
    this.skipSpace()
    if (this.text[this.pos] === ']') { this.pos++; return out }
    for (;;) {
      out.push(this.value(`${path}[${out.length}]`))
      this.skipSpace()
      const c = this.text[this.pos]
      this.pos++
      if (c === ']') return out
      if (c !== ',') { this.pos--; this.fail(`${this.found()}, expected "," or "]" after array element`) }
      this.skipSpace()
    }
  }

  string(): string {
    const start = ++this.pos
    let out = ''
    let chunk = start
    for (;;) {
      const code = this.text.charCodeAt(this.pos)
      if (Number.isNaN(code)) { this.pos = start - 1; this.fail('unterminated string') }
      if (code === 0x22) break
      if (code < 0x20) this.fail('control character in string (escape it)')
      if (code === 0x5c) {
        out += this.text.slice(chunk, this.pos)
        out += this.escape()
        chunk = this.pos
        continue
      }
      this.pos++
    }
    out += this.text.slice(chunk, this.pos)
    this.pos++
    return out
  }

  escape(): string {
    const c = this.text[this.pos + 1]
    this.pos += 2
    switch (c) {
      case '"': return '"'
      case '\\': return '\\'
      case '/': return '/'
      case 'b': return '\b'
      case 'f': return '\f'
      case 'n': return '\n'
      case 'r': return '\r'
      case 't': return '\t'
      case 'u': {
        const hex = this.text.slice(this.pos, this.pos + 4)
        if (!/^[0-9a-fA-F]{4}$/.test(hex)) { this.pos -= 2; this.fail('invalid \\u escape') }
        this.pos += 4
        return String.fromCharCode(parseInt(hex, 16))
      }
      default:
        this.pos -= 2
        return this.fail(`invalid escape "\\${c ?? ''}"`)
    }
  }

  number(): number {
    NUMBER.lastIndex = this.pos
    const match = NUMBER.exec(this.text)
    if (!match) return this.fail('invalid number')
    const n = Number(match[0])
    if (!Number.isFinite(n)) this.fail(`number ${match[0]} is out of range`)
    this.pos += match[0].length
    return n
  }

  literal<T>(word: string, value: T): T {
    if (!this.text.startsWith(word, this.pos)) return this.fail(`${this.found()}, expected a value`)
    this.pos += word.length
    return value
  }

  skipSpace(): void {
    for (;;) {
      const c = this.text.charCodeAt(this.pos)
      if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) this.pos++
      else return
    }
  }

  found(): string {
    const c = this.text[this.pos]
    return c === undefined ? 'unexpected end of input' : `unexpected ${describe(c)}`
  }

  fail(message: string): never {
    const { line, column } = this.lineColumn(this.pos)
    throw new JsonSyntaxError('', `invalid JSON at line ${line}, column ${column}: ${message}`)
  }

  lineColumn(offset: number): { line: number; column: number } {
    let line = 1
    let lineStart = 0
    for (let i = this.text.indexOf('\n'); i !== -1 && i < offset; i = this.text.indexOf('\n', i + 1)) {
      line++
      lineStart = i + 1
    }
    return { line, column: offset - lineStart + 1 }
  }
}

function describe(c: string): string {
  return JSON.stringify(c)
}
