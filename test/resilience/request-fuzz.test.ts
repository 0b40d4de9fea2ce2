// A seeded fuzz of the client side of a live gateway: a few thousand requests made by
// mutating valid HTTP/1.1 requests (GET, Content-Length and chunked POSTs, websocket upgrades,
// pipelined pairs) are sent over raw sockets, in pieces, to one gateway in front of one
// recording upstream. Outputs are not predicted; invariants are checked:
//
//  1. the gateway never crashes and still answers a plain GET at the end;
//  2. every client gets either nothing but a clean close, or bytes that parse as well-formed
//     HTTP/1.1 responses, and a 400/408/413/431 is the last thing before the close;
//  3. whatever reaches the upstream parses as well-formed requests under a strict parser, and
//     the upstream saw exactly the requests whose answers the client got (plus at most the one
//     the gateway refused mid-way): never two where the client was answered one, never bytes
//     after a refusal (request smuggling);
//  4. once the clients are gone, the gateway holds no connection, tunnel or upstream slot.
//
// Every case is generated from (seed, case number) alone, so a failure names both and
// `FUZZ_SEED=<seed> FUZZ_CASE=<n> npx vitest run test/resilience/request-fuzz.test.ts -t survives`
// replays one case by itself (FUZZ_CASES=<count> changes how many run; FUZZ_SEED alone
// explores another seed).

import { createHash } from 'node:crypto'
import { once } from 'node:events'
import net from 'node:net'
import { describe, expect, it, vi } from 'vitest'
import { finalResponse } from '../helpers/http-bytes.js'
import type { TestGateway } from '../helpers/gateway.js'
import { okResponder, recordingUpstream, type RecordingUpstream, type Responder, type UpstreamRequest } from '../helpers/recording-upstream.js'
import { mulberry32, mix, int, pick, chance, type Rng } from '../helpers/seeded-random.js'
import { gatewayLeaks } from '../helpers/survival-check.js'
import { exchange, socketClosed, useTestScope, waitUntil, within } from '../helpers/test-scope.js'

const scope = useTestScope()

const SEED = process.env.FUZZ_SEED !== undefined ? Number(process.env.FUZZ_SEED) >>> 0 : 0x5eed_f022
const CASES = process.env.FUZZ_CASES !== undefined ? Number(process.env.FUZZ_CASES) : 3000
const ONLY = process.env.FUZZ_CASE !== undefined ? Number(process.env.FUZZ_CASE) : null
/** Client connections in flight at once. */
const CONCURRENCY = 32
/**
 * How long a client waits for the gateway to close its connection. Every timeout below fires
 * within a sweep (250 ms) of its value, and a client's bytes are all sent at once, so a
 * gateway that keeps a connection longer than this is holding it for no reason.
 */
const CLIENT_WAIT_MS = 3000
/** Short deadlines, so that the clients that never send their FIN finish quickly. */
const GATEWAY_CONFIG = {
  timeouts: { headersMs: 150, responseMs: 400, keepAliveMs: 150, tunnelIdleMs: 300, upstreamIdleMs: 2000 },
  limits: { maxHeaderBytes: 2048, maxHeaderCount: 24, maxBodyBytes: 1024 },
}
/** The gateway's own answers this setup may see (the upstream always answers at once). */
const GATEWAY_ERRORS = new Set(['bad_request', 'request_timeout', 'body_too_large', 'headers_too_large'])
const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11'

// ---- request templates --------------------------------------------------------------------

/**
 * The request target of request `r` of case `id`, with a check so that a mutated tag is never
 * taken for another case's: the upstream's view of a request is tied back to its client by it.
 */
function tag(id: number, r: number): string {
  return `/fz/${id}.${r}.${tagCheck(id, r)}`
}

function tagCheck(id: number, r: number): string {
  return mix(id, r * 7919 + 1).toString(16).padStart(8, '0').slice(0, 6)
}

/** The case a target was made for, or null when it was mutated (or never was a tag). */
function caseOfTarget(target: string): number | null {
  const m = /^\/fz\/(\d+)\.(\d+)\.([0-9a-f]{6})(?:[/?]|$)/.exec(target)
  if (m === null) return null
  const id = Number(m[1])
  return tagCheck(id, Number(m[2])) === m[3] ? id : null
}

const HOSTS = ['h', 'app.example.com', '127.0.0.1:8080', 'ws.example.com', '[::1]:80']
const EXTRA_FIELDS = [
  'User-Agent: fuzz/1.0', 'Accept: */*', 'Accept: application/json', 'Accept: text/html', 'Accept-Encoding: gzip, br',
  'Cookie: a=1; b=2', 'X-Request-Id: fuzz-request', 'X-Forwarded-For: 10.1.2.3', 'X-Forwarded-Proto: https',
  'Connection: keep-alive', 'Cache-Control: no-cache', 'Expect: 100-continue', 'TE: trailers', 'Keep-Alive: timeout=5',
  'Proxy-Connection: keep-alive', 'Authorization: Bearer abc', 'X-Empty:', 'X-Latin: caf\xe9',
]

function headLines(rng: Rng, method: string, target: string, minor: number): string[] {
  const lines = [`${method} ${target} HTTP/1.${minor}`, `Host: ${pick(rng, HOSTS)}`]
  for (let n = int(rng, 4); n > 0; n--) lines.push(pick(rng, EXTRA_FIELDS))
  if (chance(rng, 0.05)) lines.push('Connection: close')
  // Host need not come first.
  if (chance(rng, 0.3)) lines.push(lines.splice(1, 1)[0])
  return lines
}

function query(rng: Rng): string {
  return pick(rng, ['', '', '', '?token=abc', '?a=1&b=2', '/x/y', '?q=%20%ZZ'])
}

/** A body the gateway has to frame right: some of them look like a request of their own. */
function body(rng: Rng, id: number): string {
  switch (int(rng, 4)) {
    case 0:
      return `GET ${tag(id, 9)} HTTP/1.1\r\nHost: h\r\n\r\n`
    case 1: {
      let s = ''
      for (let n = int(rng, 80); n > 0; n--) s += String.fromCharCode(int(rng, 256))
      return s
    }
    default:
      return 'x'.repeat(int(rng, 120))
  }
}

function bodyless(rng: Rng, id: number, r: number): string {
  const method = pick(rng, ['GET', 'GET', 'GET', 'HEAD', 'DELETE', 'OPTIONS'])
  const minor = chance(rng, 0.1) ? 0 : 1
  return `${headLines(rng, method, tag(id, r) + query(rng), minor).join('\r\n')}\r\n\r\n`
}

function withLength(rng: Rng, id: number, r: number): string {
  const b = body(rng, id)
  const lines = headLines(rng, pick(rng, ['POST', 'PUT', 'PATCH']), tag(id, r) + query(rng), chance(rng, 0.1) ? 0 : 1)
  lines.push('Content-Type: text/plain', `Content-Length: ${b.length}`)
  return `${lines.join('\r\n')}\r\n\r\n${b}`
}

function chunkedBody(rng: Rng, id: number): string {
  let out = ''
  for (let n = int(rng, 4); n > 0; n--) {
    const data = chance(rng, 0.2) ? body(rng, id) || 'z' : 'c'.repeat(1 + int(rng, 40))
    const size = data.length.toString(16)
    out += `${chance(rng, 0.3) ? size.toUpperCase().padStart(4, '0') : size}${chance(rng, 0.15) ? ';ext=1' : ''}\r\n${data}\r\n`
  }
  out += '0\r\n'
  if (chance(rng, 0.2)) out += 'X-Trailer: t\r\n'
  return `${out}\r\n`
}

function chunked(rng: Rng, id: number, r: number): string {
  const lines = headLines(rng, 'POST', tag(id, r) + query(rng), 1)
  lines.push(`Transfer-Encoding: ${chance(rng, 0.2) ? 'Chunked' : 'chunked'}`)
  return `${lines.join('\r\n')}\r\n\r\n${chunkedBody(rng, id)}`
}

function upgrade(rng: Rng, id: number, r: number): string {
  let key = ''
  const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
  for (let i = 0; i < 22; i++) key += B64[int(rng, 64)]
  const lines = headLines(rng, 'GET', tag(id, r) + query(rng), 1)
  lines.push(pick(rng, ['Connection: Upgrade', 'Connection: keep-alive, Upgrade']), 'Upgrade: websocket', 'Sec-WebSocket-Version: 13', `Sec-WebSocket-Key: ${key}==`)
  // A frame or two's worth of bytes right behind the head: tunnel data once upgraded.
  const frames = chance(rng, 0.4) ? '\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58' : ''
  return `${lines.join('\r\n')}\r\n\r\n${frames}`
}

const SINGLE = [bodyless, bodyless, withLength, chunked]

/**
 * A request followed by more than the gateway reads ahead (64 KiB) while it is answered:
 * junk, or a run of pipelined requests. Half of them ask for the connection to close.
 */
function bigTail(rng: Rng, id: number): string {
  let first = pick(rng, SINGLE)(rng, id, 0)
  if (chance(rng, 0.5)) first = setField(first, 'Connection', 'close', false)
  const size = 70_000 + int(rng, 130_000)
  if (chance(rng, 0.5)) return first + pick(rng, ['x', '\r\n', 'GET / HTTP/1.1\r\n']).repeat(size).slice(0, size)
  let tail = ''
  // Padded, so that a few dozen requests fill the read-ahead rather than thousands.
  for (let r = 1; tail.length < size; r++) tail += `GET ${tag(id, r)} HTTP/1.1\r\nHost: h\r\nX-Pad: ${'p'.repeat(1900)}\r\n\r\n`
  return first + tail
}

// ---- mutations ----------------------------------------------------------------------------

const SPECIAL_BYTES = ['\r', '\n', '\0', ' ', '\t', '\x7f', '\r\n', '\n\n', '\r\n\r\n', ':', '_', ';', ',']
const CONTENT_LENGTHS = [
  '99999999999999999999', '18446744073709551617', '4294967296', '9007199254740993', '1025', '-1', '-0', '0x10', '1e2',
  '+5', ' 5', '5 ', '05', '00000000000000000000005', '', '5, 5', '5,6', '5\t', '\v5', '٥', '0', '1', '3',
]
const TRANSFER_ENCODINGS = [
  'chunked, chunked', 'CHUNKED', ' chunked', 'chunked ', 'identity', 'gzip, chunked', 'chunked, gzip', 'chunked;q=1',
  '\tchunked', 'xchunked', 'chunke', 'chunked\x00', 'chunked\x0b', '"chunked"', 'chunked,', ',chunked', '',
]
const CHUNK_SIZES = [
  'fffffffffffffffff', '10000000000000000', 'ffffffffffffffff', '7ffffffffffffff', '0x5', '5 ', ' 5', '-5', '+5', '5;', '5;a="b"',
  '5;a=b;c', '5;\x01', '5;\x80\xff', '', 'g', '5\n', '5\r', '0000000000000000005', '400', '401', '0', '00',
]

/** Where the head ends (index of its CRLFCRLF), or the end of the string. */
function headEnd(s: string): number {
  const e = s.indexOf('\r\n\r\n')
  return e === -1 ? s.length : e
}

/** Replaces the value of the first field `name` in the head, or adds the field when missing. */
function setField(s: string, name: string, value: string, add: boolean): string {
  const end = headEnd(s)
  const head = s.slice(0, end)
  const lines = head.split('\r\n')
  const i = lines.findIndex((l, j) => j > 0 && l.toLowerCase().startsWith(`${name.toLowerCase()}:`))
  if (i === -1 || add) lines.splice(i === -1 ? lines.length : i + 1, 0, `${name}: ${value}`)
  else lines[i] = `${lines[i].slice(0, name.length)}: ${value}`
  return lines.join('\r\n') + s.slice(end)
}

type Mutation = (rng: Rng, s: string) => [string, string]

const MUTATIONS: [number, Mutation][] = [
  [4, (rng, s) => {
    const i = int(rng, s.length)
    const c = chance(rng, 0.5) ? s.charCodeAt(i) ^ (1 << int(rng, 8)) : int(rng, 256)
    return [`flip byte ${i} to ${c}`, s.slice(0, i) + String.fromCharCode(c) + s.slice(i + 1)]
  }],
  [4, (rng, s) => {
    // Mostly in the head, where the parser is.
    const i = chance(rng, 0.8) ? int(rng, headEnd(s) + 4) : int(rng, s.length + 1)
    const b = chance(rng, 0.2) ? String.fromCharCode(0x80 + int(rng, 128)) : pick(rng, SPECIAL_BYTES)
    return [`insert ${JSON.stringify(b)} at ${i}`, s.slice(0, i) + b + s.slice(i)]
  }],
  [2, (rng, s) => {
    const i = int(rng, s.length)
    return [`delete byte ${i}`, s.slice(0, i) + s.slice(i + 1)]
  }],
  [2, (rng, s) => {
    const lines = s.split('\r\n')
    const i = int(rng, lines.length)
    lines.splice(i, 0, lines[i])
    return [`duplicate line ${i}`, lines.join('\r\n')]
  }],
  [2, (rng, s) => {
    const lines = s.split('\r\n')
    const i = int(rng, lines.length)
    lines.splice(i, 1)
    return [`drop line ${i}`, lines.join('\r\n')]
  }],
  [3, (rng, s) => {
    const i = 1 + int(rng, Math.max(1, s.length - 1))
    return [`truncate at ${i}`, s.slice(0, i)]
  }],
  [3, (rng, s) => {
    const v = pick(rng, CONTENT_LENGTHS)
    const add = chance(rng, 0.25)
    return [`${add ? 'add' : 'set'} Content-Length ${JSON.stringify(v)}`, setField(s, 'Content-Length', v, add)]
  }],
  [3, (rng, s) => {
    const v = pick(rng, TRANSFER_ENCODINGS)
    const add = chance(rng, 0.3)
    return [`${add ? 'add' : 'set'} Transfer-Encoding ${JSON.stringify(v)}`, setField(s, 'Transfer-Encoding', v, add)]
  }],
  [3, (rng, s) => {
    // A chunk-size line of the body: find one by its CRLF after the head.
    const start = headEnd(s) + 4
    const sizes: number[] = []
    for (let i = start; i < s.length;) {
      sizes.push(i)
      const eol = s.indexOf('\r\n', i)
      const n = eol === -1 ? NaN : parseInt(s.slice(i, eol), 16)
      if (!(n > 0)) break
      i = eol + 2 + n + 2
    }
    if (sizes.length === 0) return ['no chunk to garble', s]
    const at = pick(rng, sizes)
    const eol = s.indexOf('\r\n', at)
    if (eol === -1) return ['no chunk to garble', s]
    switch (int(rng, 3)) {
      case 0: {
        const v = pick(rng, CHUNK_SIZES)
        return [`chunk size at ${at} to ${JSON.stringify(v)}`, s.slice(0, at) + v + s.slice(eol)]
      }
      case 1: {
        // The CRLF after the chunk's data goes missing (or turns into a bare LF).
        const n = parseInt(s.slice(at, eol), 16)
        const dataEnd = eol + 2 + (Number.isNaN(n) ? 0 : n)
        const to = pick(rng, ['', '\n', '\r', 'xx\r\n'])
        return [`chunk data end at ${dataEnd} to ${JSON.stringify(to)}`, s.slice(0, dataEnd) + to + s.slice(dataEnd + 2)]
      }
      default: {
        const ext = pick(rng, [';x', ';x=1;y="a b"', '; x', ';\x80', ';' + 'e'.repeat(5000), '\t;x'])
        return [`chunk extension ${JSON.stringify(ext.slice(0, 20))} at ${eol}`, s.slice(0, eol) + ext + s.slice(eol)]
      }
    }
  }],
  [2, (rng, s) => {
    const lines = s.slice(0, headEnd(s)).split('\r\n')
    if (lines.length < 2) return ['no field to rename', s]
    const i = 1 + int(rng, lines.length - 1)
    const colon = Math.max(1, lines[i].indexOf(':'))
    const how = int(rng, 4)
    const line = how === 0 ? `${lines[i].slice(0, 1)}_${lines[i].slice(1)}`
      : how === 1 ? `${lines[i].slice(0, colon)} ${lines[i].slice(colon)}`
        : how === 2 ? ` ${lines[i]}` // obs-fold
          : lines[i].toUpperCase()
    return [`field ${i} rewritten (${how})`, s.replace(lines[i], line)]
  }],
  [2, (rng, s) => {
    const field = pick(rng, [
      'Connection: Content-Length', 'Connection: close, Transfer-Encoding', 'Connection: Host', 'Connection: upgrade',
      'Upgrade: websocket', 'Upgrade: h2c', 'Host: other.example.com', 'Transfer-Encoding: chunked', 'Content-Length: 0',
      `X-Big: ${'b'.repeat(2100)}`, Array.from({ length: 25 }, (_, k) => `X-N${k}: ${k}`).join('\r\n'), 'X_Under: 1',
      'X-Ctl: a\x01b', 'X-Del: a\x7f', ': empty-name', 'NoColon',
    ])
    const end = headEnd(s)
    const lineStart = s.lastIndexOf('\r\n', Math.max(0, end - 1))
    const at = chance(rng, 0.5) && lineStart > 0 ? lineStart : s.indexOf('\r\n')
    if (at === -1) return ['no place for a field', s]
    return [`add ${JSON.stringify(field.slice(0, 40))}`, `${s.slice(0, at)}\r\n${field}${s.slice(at)}`]
  }],
  [1, (rng, s) => {
    const what = pick(rng, ['HTTP/1.0', 'HTTP/1.2', 'HTTP/2.0', 'HTTP/1.1 ', 'http/1.1', 'HTTP/1'])
    return [`version to ${what}`, s.replace(/HTTP\/1\.[01]/, what)]
  }],
  [1, (rng, s) => {
    const what = pick(rng, ['\r\n', '\r\n\r\n', '\n', ' ', '\r\n'.repeat(40)])
    return [`prefix ${JSON.stringify(what.slice(0, 8))}`, what + s]
  }],
]
const MUTATION_WEIGHT = MUTATIONS.reduce((n, [w]) => n + w, 0)

function mutate(rng: Rng, s: string): [string, string] {
  let r = int(rng, MUTATION_WEIGHT)
  for (const [w, m] of MUTATIONS) {
    if (r < w) return m(rng, s)
    r -= w
  }
  throw new Error('unreachable')
}

// ---- cases --------------------------------------------------------------------------------

interface FuzzCase {
  readonly id: number
  /** What was made and how it was mutated, for the failure message. */
  readonly label: string
  /** The bytes, latin1. */
  readonly bytes: string
  /** Where the bytes are split across writes. */
  readonly cuts: number[]
  /**
   * The client half-closes right after its last write, after the first answer bytes, or
   * never; "half-open" clients never close their side, even after the gateway's FIN, and
   * hold their socket until the end of the run.
   */
  readonly fin: 'now' | 'after-reply' | 'never' | 'half-open'
  readonly mutated: boolean
}

function makeCase(id: number): FuzzCase {
  const rng = mulberry32(mix(SEED, id))
  let bytes: string
  let label: string
  const shape = int(rng, 100)
  if (shape < 2) {
    label = 'bigTail'
    bytes = bigTail(rng, id)
  } else if (shape < 60) {
    const make = pick(rng, SINGLE)
    label = make.name
    bytes = make(rng, id, 0)
  } else if (shape < 70) {
    label = 'upgrade'
    bytes = upgrade(rng, id, 0)
  } else {
    const a = pick(rng, SINGLE)
    const b = pick(rng, [...SINGLE, upgrade])
    label = `${a.name}+${b.name}`
    bytes = a(rng, id, 0) + b(rng, id, 1)
  }
  const steps: string[] = []
  const count = chance(rng, 0.1) ? 0 : 1 + int(rng, chance(rng, 0.3) ? 4 : 2)
  for (let n = 0; n < count; n++) {
    const [what, next] = mutate(rng, bytes)
    steps.push(what)
    bytes = next
  }
  const cuts = new Set<number>()
  for (let n = int(rng, 5); n > 0 && bytes.length > 1; n--) {
    // Half of the cuts fall right before or after a CR or LF, where the line logic is.
    let at = 1 + int(rng, bytes.length - 1)
    if (chance(rng, 0.5)) {
      const cr = bytes.indexOf(pick(rng, ['\r', '\n']), at)
      if (cr > 0 && cr < bytes.length) at = cr + int(rng, 2)
    }
    if (at > 0 && at < bytes.length) cuts.add(at)
  }
  const f = rng()
  const fin = f < 0.55 ? 'now' : f < 0.87 ? 'after-reply' : f < 0.95 ? 'never' : 'half-open'
  return { id, label: `${label}${steps.length > 0 ? `: ${steps.join('; ')}` : ''}`, bytes, cuts: [...cuts].sort((x, y) => x - y), fin, mutated: steps.length > 0 }
}

// ---- the client ---------------------------------------------------------------------------

interface Outcome {
  readonly c: FuzzCase
  /** Everything the gateway sent, latin1. */
  readonly received: string
  /** The gateway sent its FIN. */
  readonly peerEnded: boolean
  /** The socket error seen (ECONNRESET for a reset), or null. */
  readonly error: string | null
  /** The connection closed within CLIENT_WAIT_MS (for a half-open client: the gateway's FIN came). */
  readonly closed: boolean
  /** A half-open client's socket, still open. */
  readonly held: net.Socket | null
  /** The client's port: the gateway's connections are tied back to their case by it. */
  readonly localPort: number
}

async function play(port: number, c: FuzzCase): Promise<Outcome> {
  const halfOpen = c.fin === 'half-open'
  const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: halfOpen })
  socket.setNoDelay(true)
  const chunks: Buffer[] = []
  let peerEnded = false
  let error: string | null = null
  let onFirstData: () => void = () => {}
  const firstData = new Promise<void>((r) => { onFirstData = r })
  socket.on('data', (d: Buffer) => {
    chunks.push(d)
    onFirstData()
  })
  let onEnd: () => void = () => {}
  const endP = new Promise<boolean>((r) => { onEnd = () => r(true) })
  socket.on('end', () => {
    peerEnded = true
    onEnd()
  })
  socket.on('error', (e: NodeJS.ErrnoException) => { error = e.code ?? e.message })
  const closedP = once(socket, 'close').then(() => true)
  await Promise.race([once(socket, 'connect'), closedP])
  const localPort = socket.localPort ?? 0
  const writable = (): boolean => !socket.destroyed && !socket.writableEnded && !peerEnded
  let from = 0
  for (const at of [...c.cuts, c.bytes.length]) {
    if (!writable()) break
    socket.write(Buffer.from(c.bytes.slice(from, at), 'latin1'))
    from = at
    // One timer turn between pieces: on loopback with Nagle off, each arrives on its own.
    if (at < c.bytes.length) await new Promise((r) => setTimeout(r, 1))
  }
  if (c.fin === 'after-reply') await Promise.race([firstData, closedP, new Promise((r) => setTimeout(r, 300))])
  if ((c.fin === 'now' || c.fin === 'after-reply') && writable()) socket.end()
  let timer: NodeJS.Timeout | undefined
  const closed = await Promise.race([halfOpen ? Promise.race([endP, closedP]) : closedP, new Promise<boolean>((r) => { timer = setTimeout(() => r(false), CLIENT_WAIT_MS) })])
  clearTimeout(timer)
  const held = halfOpen && !socket.destroyed ? socket : null
  if (held === null) socket.destroy()
  return { c, received: Buffer.concat(chunks).toString('latin1'), peerEnded, error, closed, held, localPort }
}

// ---- strict parsers for both sides --------------------------------------------------------

const TOKEN_RE = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/
/** field-value: VCHAR, obs-text, SP and HTAB; no other control character. */
const VALUE_RE = /^[\t\x20-\x7e\x80-\xff]*$/

/** A problem with one CRLF-only field line, or null. */
function fieldLineProblem(line: string, noUnderscore: boolean): string | null {
  const colon = line.indexOf(':')
  if (colon <= 0) return `a field line without a name or colon: ${JSON.stringify(line.slice(0, 60))}`
  const name = line.slice(0, colon)
  if (!TOKEN_RE.test(name)) return `an invalid field name ${JSON.stringify(name.slice(0, 60))}`
  if (noUnderscore && name.includes('_')) return `a field name with "_": ${JSON.stringify(name)}`
  if (!VALUE_RE.test(line.slice(colon + 1))) return `a control character in field ${JSON.stringify(name)}`
  return null
}

interface Head {
  readonly startLine: string
  readonly fields: [string, string][]
  all(lower: string): string[]
}

/** Parses `s[pos..end)` (a head without its CRLFCRLF) strictly: CRLF only, valid field lines. */
function parseHead(s: string, pos: number, end: number, noUnderscore: boolean): Head | string {
  const text = s.slice(pos, end)
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c === 10 && (i === 0 || text.charCodeAt(i - 1) !== 13)) return `a bare LF at ${pos + i}`
    if (c === 13 && text.charCodeAt(i + 1) !== 10) return `a bare CR at ${pos + i}`
  }
  const lines = text.split('\r\n')
  const fields: [string, string][] = []
  for (const line of lines.slice(1)) {
    const problem = fieldLineProblem(line, noUnderscore)
    if (problem !== null) return problem
    const colon = line.indexOf(':')
    fields.push([line.slice(0, colon).toLowerCase(), line.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, '')])
  }
  return { startLine: lines[0], fields, all: (lower) => fields.filter(([n]) => n === lower).map(([, v]) => v) }
}

type Framing = { kind: 'none' } | { kind: 'length'; n: number } | { kind: 'chunked' } | { kind: 'close' }

/** The framing a head declares (RFC 9112 section 6.3), or why it is ambiguous. */
function framingOf(head: Head, noBody: boolean, untilCloseAllowed: boolean): Framing | string {
  const te = head.all('transfer-encoding')
  const cl = head.all('content-length')
  if (te.length > 0 && cl.length > 0) return 'both Transfer-Encoding and Content-Length'
  if (te.length > 1 || cl.length > 1) return 'a repeated Transfer-Encoding or Content-Length'
  if (te.length === 1 && te[0].toLowerCase() !== 'chunked') return `Transfer-Encoding ${JSON.stringify(te[0])}`
  if (cl.length === 1 && !/^\d{1,15}$/.test(cl[0])) return `Content-Length ${JSON.stringify(cl[0])}`
  if (noBody) return { kind: 'none' }
  if (te.length === 1) return { kind: 'chunked' }
  if (cl.length === 1) return { kind: 'length', n: Number(cl[0]) }
  return untilCloseAllowed ? { kind: 'close' } : { kind: 'none' }
}

/** The end of a strictly chunked body starting at `pos`: an index, 'incomplete', or a problem. */
function chunkedEnd(s: string, pos: number, noUnderscore: boolean): number | 'incomplete' | { problem: string } {
  for (;;) {
    const eol = s.indexOf('\r\n', pos)
    const line = s.slice(pos, eol === -1 ? s.length : eol)
    const m = /^([0-9a-fA-F]{1,16})(;[\t\x20-\x7e\x80-\xff]*)?$/.exec(line)
    if (m === null) {
      // What there is so far could still become a valid size line.
      if (eol === -1 && /^[0-9a-fA-F]{0,16}(;[\t\x20-\x7e\x80-\xff]*)?\r?$/.test(line)) return 'incomplete'
      return { problem: `a chunk-size line ${JSON.stringify(line.slice(0, 40))} at ${pos}` }
    }
    if (eol === -1) return 'incomplete'
    const size = parseInt(m[1], 16)
    pos = eol + 2
    if (size === 0) {
      for (;;) {
        const e = s.indexOf('\r\n', pos)
        if (e === -1) return 'incomplete'
        if (e === pos) return pos + 2
        const trailer = s.slice(pos, e)
        if (trailer.includes('\n') || trailer.includes('\r')) return { problem: `a bare CR or LF in a trailer at ${pos}` }
        const problem = fieldLineProblem(trailer, noUnderscore)
        if (problem !== null) return { problem: `trailer: ${problem}` }
        pos = e + 2
      }
    }
    if (s.length < pos + size + 2) {
      if (s.length > pos + size && s[pos + size] !== '\r') return { problem: `chunk data longer than its size at ${pos}` }
      return 'incomplete'
    }
    if (s.slice(pos + size, pos + size + 2) !== '\r\n') return { problem: `chunk data not ended by CRLF at ${pos + size}` }
    pos += size + 2
  }
}

/** A request as the upstream received it. */
interface SeenRequest {
  readonly where: string
  readonly target: string
  readonly complete: boolean
}

/**
 * Splits the bytes an upstream connection received into requests under a strict parser.
 * `upgradedAt`: the index of the request the upstream answered 101 (what follows is tunnel
 * data). Only the last request may be incomplete (the gateway gave up on it mid-body).
 */
function parseUpstream(s: string, connId: number, upgradedAt: number | undefined): { requests: SeenRequest[]; problem: string | null } {
  const requests: SeenRequest[] = []
  let pos = 0
  for (let index = 0; pos < s.length; index++) {
    const where = `upstream connection ${connId}, request ${index}`
    const end = s.indexOf('\r\n\r\n', pos)
    if (end === -1) return { requests, problem: `${where}: an incomplete head ${JSON.stringify(s.slice(pos, pos + 200))}` }
    const head = parseHead(s, pos, end, true)
    if (typeof head === 'string') return { requests, problem: `${where}: ${head} in ${JSON.stringify(s.slice(pos, end + 4))}` }
    // The target: VCHARs, no "#" (a fragment is never part of a request-target).
    const m = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([\x21\x22\x24-\x7e]+) HTTP\/1\.([01])$/.exec(head.startLine)
    if (m === null) return { requests, problem: `${where}: a malformed request line ${JSON.stringify(head.startLine)}` }
    const hosts = head.all('host').length
    if (hosts > 1 || (hosts === 0 && m[3] === '1')) return { requests, problem: `${where}: ${hosts} Host fields in HTTP/1.${m[3]}` }
    const framing = framingOf(head, false, false)
    if (typeof framing === 'string') return { requests, problem: `${where}: ${framing}` }
    let bodyEnd = end + 4
    let complete = true
    if (framing.kind === 'length') {
      bodyEnd += framing.n
      if (bodyEnd > s.length) complete = false
    } else if (framing.kind === 'chunked') {
      const e = chunkedEnd(s, bodyEnd, true)
      if (typeof e === 'object') return { requests, problem: `${where}: ${e.problem} in ${JSON.stringify(s.slice(pos, pos + 400))}` }
      if (e === 'incomplete') complete = false
      else bodyEnd = e
    }
    requests.push({ where, target: m[2], complete })
    if (!complete || index === upgradedAt) break
    pos = bodyEnd
  }
  return { requests, problem: null }
}

interface SeenResponse {
  readonly status: number
  /** x-gateway-error, or null for a response the upstream made. */
  readonly gatewayError: string | null
  /** x-upstream-target: the target the upstream answered. */
  readonly upstreamTarget: string | null
}

/** Splits what a client received into responses under a strict parser. */
function parseClient(o: Outcome): { responses: SeenResponse[]; problem: string | null } {
  const s = o.received
  const responses: SeenResponse[] = []
  let pos = 0
  while (pos < s.length) {
    const n = responses.length
    const end = s.indexOf('\r\n\r\n', pos)
    if (end === -1) return { responses, problem: `response ${n}: an incomplete head ${JSON.stringify(s.slice(pos, pos + 200))}` }
    const head = parseHead(s, pos, end, false)
    if (typeof head === 'string') return { responses, problem: `response ${n}: ${head}` }
    const m = /^HTTP\/1\.1 ([1-5]\d\d) [\t\x20-\x7e\x80-\xff]*$/.exec(head.startLine)
    if (m === null) return { responses, problem: `response ${n}: a malformed status line ${JSON.stringify(head.startLine)}` }
    const status = Number(m[1])
    const gatewayError = head.all('x-gateway-error')[0] ?? null
    const upstreamTarget = head.all('x-upstream-target')[0] ?? null
    if ((gatewayError === null) === (upstreamTarget === null)) return { responses, problem: `response ${n}: made by neither the gateway nor the upstream: ${JSON.stringify(s.slice(pos, end))}` }
    if (gatewayError !== null && !GATEWAY_ERRORS.has(gatewayError)) return { responses, problem: `response ${n}: unexpected gateway error ${status} ${gatewayError}` }
    responses.push({ status, gatewayError, upstreamTarget })
    pos = end + 4
    if (status === 101) return { responses, problem: null } // tunnel data follows
    // The upstream names the method it answered; the gateway's own errors to HEAD have no body
    // (RFC 9110 section 9.3.2): a gateway error ending at its head must answer a HEAD this
    // client sent.
    const bodylessError = gatewayError !== null && pos === s.length && head.all('content-length')[0] !== '0'
    if (bodylessError && !/(^|\r\n)HEAD /.test(o.c.bytes)) return { responses, problem: `response ${n}: a ${status} without its body, to no HEAD` }
    const noBody = status < 200 || status === 204 || status === 304 || bodylessError || (gatewayError === null && head.all('x-upstream-method')[0] === 'HEAD')
    const framing = framingOf(head, noBody, true)
    if (typeof framing === 'string') return { responses, problem: `response ${n}: ${framing}` }
    if (framing.kind === 'length') {
      if (pos + framing.n > s.length) return { responses, problem: `response ${n}: ${s.length - pos} of ${framing.n} body bytes` }
      pos += framing.n
    } else if (framing.kind === 'chunked') {
      const e = chunkedEnd(s, pos, false)
      if (typeof e !== 'number') return { responses, problem: `response ${n}: a chunked body ${typeof e === 'object' ? e.problem : 'cut short'}` }
      pos = e
    } else if (framing.kind === 'close') {
      pos = s.length
    }
    const closes = head.all('connection').some((v) => /(^|,)\s*close\s*(,|$)/i.test(v))
    const refusal = status === 400 || status === 408 || status === 413 || status === 431
    if ((refusal || closes || gatewayError !== null) && pos < s.length) {
      return { responses, problem: `response ${n} (${status}${closes ? ', Connection: close' : ''}) is followed by ${JSON.stringify(s.slice(pos, pos + 100))}` }
    }
    if (refusal && !closes) return { responses, problem: `response ${n}: a ${status} without Connection: close` }
  }
  return { responses, problem: null }
}

// ---- the run ------------------------------------------------------------------------------

/** The upstream: each answer names the target and method it saw; websocket upgrades mostly succeed. */
function fuzzResponder(upgradedAt: Map<number, number>): Responder {
  return (req, socket) => {
    if (upgradedAt.has(req.conn.id)) return // tunnel bytes, not requests
    const t = req.target
    const h = mix(t.length, t.charCodeAt(t.length - 1)) % 4
    const names = `X-Upstream-Target: ${t}\r\nX-Upstream-Method: ${req.method}\r\n`
    const key = req.get('sec-websocket-key')
    if (key !== undefined && (req.get('upgrade') ?? '').toLowerCase() === 'websocket') {
      if (h !== 0) {
        upgradedAt.set(req.conn.id, req.index)
        const accept = createHash('sha1').update(key + WS_GUID).digest('base64')
        socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n${names}\r\n`)
        return
      }
      socket.write(`HTTP/1.1 403 Forbidden\r\n${names}Content-Length: 6\r\n\r\nno way`)
      return
    }
    if (req.method === 'HEAD') socket.write(`HTTP/1.1 200 OK\r\n${names}Content-Length: ${t.length}\r\n\r\n`)
    else if (h === 0) socket.write(`HTTP/1.1 204 No Content\r\n${names}\r\n`)
    else if (h === 1 && req.version === 'HTTP/1.1') socket.write(`HTTP/1.1 200 OK\r\n${names}Transfer-Encoding: chunked\r\n\r\n${t.length.toString(16)}\r\n${t}\r\n0\r\n\r\n`)
    else socket.write(`HTTP/1.1 200 OK\r\n${names}Content-Length: ${t.length}\r\n\r\n${t}`)
  }
}

function count(xs: readonly string[]): Map<string, number> {
  const m = new Map<string, number>()
  for (const x of xs) m.set(x, (m.get(x) ?? 0) + 1)
  return m
}

/** What `have` holds beyond `want` (multisets), as a list. */
function excess(have: Map<string, number>, want: Map<string, number>): string[] {
  const out: string[] = []
  for (const [k, n] of have) for (let i = want.get(k) ?? 0; i < n; i++) out.push(k)
  return out
}

function describeCase(o: Outcome): string {
  return `case ${o.c.id} (${o.c.label}; cuts ${JSON.stringify(o.c.cuts)}; fin ${o.c.fin}) sent ${JSON.stringify(o.c.bytes.slice(0, 300))}, got ${JSON.stringify(o.received.slice(0, 300))}`
}

/** Every broken invariant, one line each. */
function check(outcomes: Outcome[], up: RecordingUpstream, upgradedAt: Map<number, number>): string[] {
  const problems: string[] = []
  // The client side (invariant 2).
  const relayed = new Map<number, string[]>()
  const refusedLast = new Set<number>()
  const relayedUntagged: string[] = []
  for (const o of outcomes) {
    if (!o.closed) problems.push(`${o.c.fin === 'half-open' ? 'no FIN' : 'still open'} after ${CLIENT_WAIT_MS} ms: ${describeCase(o)}`)
    if (o.received.length === 0) {
      if (!o.peerEnded || o.error !== null) problems.push(`no answer and no clean close (FIN ${o.peerEnded}, error ${o.error}): ${describeCase(o)}`)
      continue
    }
    const { responses, problem } = parseClient(o)
    if (problem !== null) problems.push(`${problem}: ${describeCase(o)}`)
    // Nothing fails mid-response here (the upstream answers whole and at once), so every
    // connection ends with the gateway's FIN, never a reset.
    else if (o.closed && (o.error !== null || !o.peerEnded)) problems.push(`no clean close after the responses (FIN ${o.peerEnded}, error ${o.error}): ${describeCase(o)}`)
    const mine: string[] = []
    for (const r of responses) {
      if (r.upstreamTarget === null) continue
      const owner = caseOfTarget(r.upstreamTarget)
      if (owner === null) relayedUntagged.push(r.upstreamTarget)
      else if (owner !== o.c.id) problems.push(`got the answer to case ${owner}'s request ${r.upstreamTarget}: ${describeCase(o)}`)
      else mine.push(r.upstreamTarget)
    }
    relayed.set(o.c.id, mine)
    if (responses.length > 0 && responses[responses.length - 1].gatewayError !== null) refusedLast.add(o.c.id)
  }

  // The upstream side (invariant 3): strict framing first, then each request tied to a client.
  const seen = new Map<number, SeenRequest[]>()
  const seenUntagged: string[] = []
  let incompleteUntagged = 0
  for (const conn of up.connections) {
    const { requests, problem } = parseUpstream(conn.received.toString('latin1'), conn.id, upgradedAt.get(conn.id))
    if (problem !== null) problems.push(problem)
    for (const r of requests) {
      const owner = caseOfTarget(r.target)
      if (owner === null) {
        if (r.complete) seenUntagged.push(r.target)
        else incompleteUntagged++
        continue
      }
      const list = seen.get(owner) ?? []
      list.push(r)
      seen.set(owner, list)
    }
  }
  const byId = new Map(outcomes.map((o) => [o.c.id, o]))
  for (const [id, reqs] of seen) {
    const o = byId.get(id)
    if (o === undefined) {
      problems.push(`the upstream saw requests of case ${id}, which never ran: ${reqs.map((r) => r.target).join(', ')}`)
      continue
    }
    // Every request the client was answered for reached the upstream whole; beyond those, at
    // most one more (complete or not), and only when the gateway's refusal ended the connection.
    const answered = count(relayed.get(id) ?? [])
    const complete = count(reqs.filter((r) => r.complete).map((r) => r.target))
    const missing = excess(answered, complete)
    const extra = excess(count(reqs.map((r) => r.target)), answered)
    if (missing.length > 0) problems.push(`answers to ${missing.join(', ')} that the upstream never saw whole: ${describeCase(o)}`)
    if (extra.length > 1 || (extra.length === 1 && !refusedLast.has(id))) {
      problems.push(`the upstream saw ${extra.join(', ')} (${reqs.map((r) => `${r.where}${r.complete ? '' : ' incomplete'}`).join('; ')}) but the client got no answer from it: ${describeCase(o)}`)
    }
  }
  for (const o of outcomes) {
    if (!seen.has(o.c.id) && (relayed.get(o.c.id) ?? []).length > 0) problems.push(`answers the upstream never gave: ${describeCase(o)}`)
  }
  // Requests whose tag a mutation spoiled can only be matched as a whole.
  const untaggedExtra = excess(count(seenUntagged), count(relayedUntagged))
  const untaggedMissing = excess(count(relayedUntagged), count(seenUntagged))
  if (untaggedMissing.length > 0) problems.push(`answers to untagged requests the upstream never saw whole: ${untaggedMissing.join(', ')}`)
  if (untaggedExtra.length + incompleteUntagged > refusedLast.size) problems.push(`untagged requests at the upstream nobody was answered for: ${untaggedExtra.join(', ')}`)
  return problems
}

/**
 * Runs `check` until it is true or 2 s (real time) pass, with the clock moved past every
 * deadline the gateway keeps (its sweep runs on real timers and reads Date). Returns the last
 * result of `check`.
 */
async function pastEveryDeadline(check: () => boolean): Promise<boolean> {
  vi.useFakeTimers({ toFake: ['Date'] })
  try {
    vi.setSystemTime(Date.now() + 60_000)
    const until = performance.now() + 2000
    while (!check() && performance.now() < until) await new Promise((r) => setTimeout(r, 20))
    return check()
  } finally {
    vi.useRealTimers()
  }
}

async function runPool<T, R>(items: readonly T[], width: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length)
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++
      out[i] = await fn(items[i])
    }
  }
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, worker))
  return out
}

describe('seeded request fuzzing against a live gateway', () => {
  it(`survives ${ONLY === null ? CASES : 1} mutated requests (seed ${SEED}) with clean framing on both sides and nothing left open`, async () => {
    const upgradedAt = new Map<number, number>()
    const up = await recordingUpstream(fuzzResponder(upgradedAt))
    scope.defer(() => up.close())
    const gw = await scope.gateway(up.target, GATEWAY_CONFIG)
    const port = gw.port()
    const cases = ONLY === null ? Array.from({ length: CASES }, (_, i) => makeCase(i)) : [makeCase(ONLY)]

    const started = performance.now()
    const outcomes = await runPool(cases, CONCURRENCY, (c) => play(port, c))
    const elapsed = Math.round(performance.now() - started)
    const held = outcomes.flatMap((o) => (o.held === null ? [] : [o.held]))
    scope.defer(() => { for (const h of held) h.destroy() })

    // Invariant 4, first: every connection the gateway still holds belongs to a half-open
    // client that still holds its socket; the others closed theirs, so the gateway must too.
    const heldPorts = new Set(held.map((h) => h.localPort))
    const byPort = new Map(outcomes.map((o) => [o.localPort, o]))
    const open = (why: string, all: boolean): string[] => [...gw.gw.engine.connections].filter((c) => all || !heldPorts.has(c.socket.remotePort)).map((c) => {
      const o = byPort.get(c.socket.remotePort ?? -1)
      return `still open on the gateway ${why}: ${o === undefined ? `port ${c.socket.remotePort}` : describeCase(o)}`
    })
    const strays = (): string[] => open('after its client left', false)
    const leftBehind = await waitUntil(() => (strays().length === 0 ? [] : null), 2000, 'the gateway to close connections whose client left').catch(() => strays())
    // Then: those a half-open client keeps go within the gateway's own bounds.
    const listener = gw.gw.listeners.get('http')!.ctx
    await pastEveryDeadline(() => gatewayLeaks(gw).length === 0 && listener.open === 0)
    const leaks = gatewayLeaks(gw).concat(listener.open > 0 ? [`listener open count ${listener.open}`] : [], open('past every deadline', true))
    for (const h of held) h.destroy()
    // Invariant 1: still serving.
    const sentinel = await exchange(port, 'GET /sentinel HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n')

    const problems = check(outcomes, up, upgradedAt)
    const replay = `FUZZ_SEED=${SEED} FUZZ_CASE=<n> npx vitest run test/resilience/request-fuzz.test.ts -t survives`
    expect(problems.slice(0, 10), `seed ${SEED}: ${problems.length} broken invariant(s) in ${outcomes.length} cases (${elapsed} ms); replay one with ${replay}`).toEqual([])
    expect(leftBehind, `seed ${SEED}: gateway connections after their clients left`).toEqual([])
    expect(leaks.slice(0, 10), `seed ${SEED}: gateway state after every bound passed (${held.length} half-open clients)`).toEqual([])
    expect(finalResponse(sentinel.raw).status, `seed ${SEED}: a plain GET after the fuzz`).toBe(200)

    if (ONLY === null) {
      // The fuzz reaches both sides of the parser, or it proves nothing: valid requests pass,
      // and plenty are refused or cut short.
      const answeredByUpstream = outcomes.filter((o) => (o.received.match(/\r\nX-Upstream-Target: /g) ?? []).length > 0).length
      const refused = outcomes.filter((o) => /^HTTP\/1\.1 4\d\d /m.test(o.received) && o.received.includes('x-gateway-error')).length
      expect(answeredByUpstream, `seed ${SEED}: cases the upstream answered`).toBeGreaterThan(outcomes.length / 5)
      expect(refused, `seed ${SEED}: cases the gateway refused`).toBeGreaterThan(outcomes.length / 5)
      // (Unless a websocket's client ends its side before the 101, or a tail of junk follows.)
      for (const o of outcomes.filter((x) => !x.c.mutated && !(x.c.fin !== 'never' && x.c.label.includes('upgrade')) && x.c.label !== 'bigTail')) {
        expect(o.received.includes('x-gateway-error'), `seed ${SEED}: an unmutated request was refused: ${describeCase(o)}`).toBe(false)
      }
    }
  })
})

// Bugs the fuzz found, each reduced to the bytes that show it.
describe('what the fuzz found', () => {
  async function setup(respond?: Responder): Promise<{ gw: TestGateway; port: number; up: RecordingUpstream; complete: string[] }> {
    const up = await recordingUpstream(respond)
    scope.defer(() => up.close())
    const complete: string[] = []
    up.events.on('request', (r: UpstreamRequest) => complete.push(r.target))
    const gw = await scope.gateway(up.target, GATEWAY_CONFIG)
    return { gw, port: gw.port(), up, complete }
  }

  // Seed 0x5eed_f022, case 303 (also 240, 1106, ...): "0\r\n\r\n" then a pipelined request,
  // with the empty line mutated into "xx". The scanner took "xx" and the whole next request
  // for trailers and forwarded them as one body: a parser further down that ends the body at
  // the last chunk, or refuses the odd "trailer", reads a request the gateway never saw.
  it.each([
    ['a trailer line without a colon', '0\r\nxx\r\n\r\n'],
    ['a request line in the trailer section', '0\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n'],
    ['a trailer starting with whitespace (obs-fold)', '0\r\n X-Sum: 1\r\n\r\n'],
    ['a trailer with an empty name', '0\r\n: 1\r\n\r\n'],
    ['a trailer name with an underscore', '0\r\nX_Sum: 1\r\n\r\n'],
    ['a control character in a trailer value', '0\r\nX-Sum: a\x01b\r\n\r\n'],
  ])('answers 400 to a chunked request body with %s, and no request reaches the upstream whole', async (_name, last) => {
    const { port, complete } = await setup()
    const ex = await exchange(port, `POST /upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n${last}`)
    const res = finalResponse(ex.raw)
    expect({ status: res.status, code: res.get('x-gateway-error'), closed: ex.closed }).toEqual({ status: 400, code: 'bad_request', closed: true })
    const sentinel = await exchange(port, 'GET /sentinel HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n')
    expect(finalResponse(sentinel.raw).status).toBe(200)
    expect(complete).toEqual(['/sentinel'])
  })

  it('still forwards a chunked request body whose trailers are proper field lines, as sent', async () => {
    const { port, up } = await setup()
    const body = '5\r\nhello\r\n0\r\nX-Sum: 1\r\nX-Empty:\r\nX-Tab:\ta b\r\n\r\n'
    const ex = await exchange(port, `POST /upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n${body}`)
    expect(finalResponse(ex.raw).status).toBe(200)
    expect(up.requests[0].body.toString('latin1')).toBe(body)
  })

  // Seed 0x5eed_f022, cases 1926, 2536, 2551: a request asking for the connection to close,
  // followed by more than the read-ahead (64 KiB). The gateway stopped reading to bound its
  // buffer, answered, sent its FIN and never read again: the client's FIN went unseen and the
  // connection stayed open for good (no deadline either).
  it('closes a Connection: close exchange whose client pipelined past the read-ahead, once the client closes', async () => {
    let release: () => void = () => {}
    const released = new Promise<void>((r) => { release = r })
    const { gw, port } = await setup((req, socket) => { void released.then(() => okResponder(req, socket)) })
    const client = await scope.connect(port)
    let got = ''
    client.on('data', (d: Buffer) => { got += d.toString('latin1') })
    client.write(`GET /last HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n${'x'.repeat(128 * 1024)}`)
    // The answer waits until the gateway has stopped reading ahead.
    await waitUntil(() => [...gw.gw.engine.connections].some((c) => c.socket.isPaused()), 2000, 'the gateway to stop reading ahead')
    release()
    await socketClosed(client, 2000) // the gateway's FIN, then ours (allowHalfOpen is off)
    expect(finalResponse(got).status).toBe(200)
    await waitUntil(() => gw.gw.engine.connections.size === 0, 2000, 'the gateway to close its side too')
  })

  // Seed 0x5eed_f022, cases 836, 1451 and every other half-open client answered with
  // Connection: close: a client that never closes its side. After a response that ends the
  // connection the gateway sent its FIN and waited for the client's with no deadline at all
  // (every other path bounds that wait): such a client held a connection and a descriptor for
  // good.
  it('lets go of a connection it ended after a response when the client never closes its side', async () => {
    const { gw, port } = await setup()
    const client = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true })
    scope.defer(() => client.destroy())
    client.on('error', () => {})
    let got = ''
    client.on('data', (d: Buffer) => { got += d.toString('latin1') })
    await once(client, 'connect')
    client.write('GET /old HTTP/1.0\r\n\r\n')
    await within(once(client, 'end'), 2000, "the gateway's FIN")
    expect(finalResponse(got).status).toBe(200)
    expect(await pastEveryDeadline(() => gw.gw.engine.connections.size === 0), 'the gateway still holds the connection').toBe(true)
  })

  // Seed 0x5eed_f022, cases 2676, 2975: the upstream's response timer started when the request
  // head was sent, not when the body was through, and on the coarse clock, so it beat the
  // client's body timer. A stalled body was answered 504 upstream_timeout (blaming the
  // upstream) instead of 408, and an upload that kept coming for longer than responseMs was
  // cut off with a 504.
  it('answers 408 request_timeout to a request body that stalls after its first bytes', async () => {
    const { port } = await setup()
    const client = scope.client(port)
    client.socket.write('POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc')
    // One more byte 300 ms on, then nothing: the body has stalled for responseMs (400) only
    // 700 ms after the head, while the response timer, started with the head, fires first.
    await new Promise((r) => setTimeout(r, 300))
    client.socket.write('d')
    const res = finalResponse(await client.waitFor(/\r\n\r\n/, 2000))
    expect({ status: res.status, code: res.get('x-gateway-error') }).toEqual({ status: 408, code: 'request_timeout' })
  })

  it('forwards an upload that keeps coming for longer than responseMs', async () => {
    const { port } = await setup()
    const client = scope.client(port)
    client.socket.write('POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 8\r\nConnection: close\r\n\r\n')
    // One byte every 100 ms: never stalled for the body timer (responseMs 400), 800 ms in all.
    for (let i = 0; i < 8 && !client.socket.destroyed; i++) {
      await new Promise((r) => setTimeout(r, 100))
      client.socket.write('x')
    }
    const raw = await client.waitFor(/\r\n\r\n/, 2000)
    expect(finalResponse(raw).status).toBe(200)
  })
})
