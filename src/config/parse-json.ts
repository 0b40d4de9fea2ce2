// A strict JSON (RFC 8259) parser for config files. JSON.parse is not enough here: on Node 20
// its errors often carry no position ("Unexpected token '}', ... is not valid JSON"), and it
// silently keeps the last of two duplicate keys, so a config with `"port"` written twice
// would run on whichever came last. Both become errors that name the line and column.

import type { ConfigIssue } from './types.js'
import { joinPath } from './validate.js'

export type ParsedJson = { ok: true; value: unknown } | { ok: false; issue: ConfigIssue }

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
  constructor(readonly text: string) {}

  value(path: string): unknown {
    const c = this.text[this.pos]
    switch (c) {
      case '{': return this.object(path)
      case '[': return this.array(path)
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
    this.pos += match[0].length
    return Number(match[0])
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
