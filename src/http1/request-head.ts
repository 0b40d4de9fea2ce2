// Strict HTTP/1.1 request-head parser (RFC 9112). It refuses, rather than repairs, every
// ambiguity a second parser further down could read differently (request smuggling):
// bare LF or CR, obs-fold, CL with TE, duplicate CL, any TE but exactly "chunked", duplicate
// Host, whitespace before the colon, "_" in field names (nginx and Apache drop or rewrite
// them, so two hops would disagree on what was sent).

import { HeadError } from './head-error.js'
import { lineEndProblem, readFieldLines } from './field-lines.js'
import { TARGET, TOKEN, isValidHost, listHasToken, parseDecimal } from './syntax.js'

export class RequestHead {
  method = ''
  /** The request-target to forward: origin-form (absolute-form is reduced to its path). */
  target = ''
  /** The path part of target (without query), for routing. */
  path = ''
  /** 0 for HTTP/1.0, 1 for HTTP/1.1. */
  minor = 1
  /** Field names as sent (case kept) and values, pairwise: [name0, value0, name1, value1, ...]. */
  headers: string[] = []
  /** Lower-cased names, one per pair (index i/2). */
  lowerNames: string[] = []
  host: string | null = null
  /** The authority of an absolute-form target, or null. */
  authority: string | null = null
  /** -1 when absent. */
  contentLength = -1
  chunked = false
  /** Lower-cased tokens of Connection, or null. */
  connectionTokens: string[] | null = null
  /** The Upgrade header value, or null. */
  upgrade: string | null = null
  /** True for a websocket upgrade (validated: GET, key, Connection: upgrade). */
  websocket = false
  wsKey: string | null = null
  /** The client wants the connection kept after this exchange. */
  keepAlive = true
  /** Bytes of the head, CRLFCRLF included. */
  size = 0

  get hasBody(): boolean {
    return this.chunked || this.contentLength > 0
  }
}

/**
 * Parses the head in `s` (latin1, up to and excluding the final CRLFCRLF). Throws HeadError.
 * `maxHeaderCount` bounds the field lines (too many: `too_large`, answered 431). `bytes`, when
 * given, holds the same bytes (at least `s.length` of them): the scan runs over it.
 */
export function parseRequestHead(s: string, maxHeaderCount: number, bytes?: Uint8Array): RequestHead {
  const b = bytes ?? Buffer.from(s, 'latin1')
  const end = s.length
  const head = new RequestHead()
  let eol = 0
  while (eol < end && b[eol] !== 13 && b[eol] !== 10) eol++
  if (eol < end && (b[eol] !== 13 || eol + 1 >= end || b[eol + 1] !== 10)) throw new HeadError('malformed', lineEndProblem(b, eol, end, 'request'))
  parseRequestLine(b, s, eol, head)

  readFieldLines(b, s, eol + 2, end, maxHeaderCount, true, 'request', head.headers, head.lowerNames)
  let teSeen = false
  const fields = head.headers
  const lowers = head.lowerNames
  for (let j = 0; j < lowers.length; j++) {
    const lower = lowers[j]
    const value = fields[j * 2 + 1]
    switch (lower) {
      case 'host':
        if (head.host !== null) throw new HeadError('malformed', 'duplicate Host header')
        if (!isValidHost(value)) throw new HeadError('malformed', 'an invalid Host header')
        head.host = value
        break
      case 'content-length': {
        if (head.contentLength !== -1) throw new HeadError('malformed', 'duplicate Content-Length')
        const n = parseDecimal(value)
        if (n < 0) throw new HeadError('malformed', `an invalid Content-Length ${JSON.stringify(value)}`)
        head.contentLength = n
        break
      }
      case 'transfer-encoding':
        if (teSeen) throw new HeadError('malformed', 'duplicate Transfer-Encoding')
        teSeen = true
        if (value.length !== 7 || value.toLowerCase() !== 'chunked') {
          throw new HeadError('malformed', `unsupported Transfer-Encoding ${JSON.stringify(value)} (only "chunked")`)
        }
        head.chunked = true
        break
      case 'connection': {
        const tokens = value.toLowerCase().split(',')
        const list = head.connectionTokens ?? (head.connectionTokens = [])
        for (const t of tokens) {
          const tok = t.trim()
          if (tok.length > 0) list.push(tok)
        }
        break
      }
      case 'upgrade':
        head.upgrade = head.upgrade === null ? value : `${head.upgrade}, ${value}`
        break
      case 'sec-websocket-key':
        head.wsKey = head.wsKey === null ? value : ''
        break
    }
  }

  // RFC 9112 section 6.1: a request with both is an attack vector; refuse it outright.
  if (head.chunked && head.contentLength !== -1) throw new HeadError('malformed', 'both Content-Length and Transfer-Encoding')
  if (head.chunked && head.minor === 0) throw new HeadError('malformed', 'Transfer-Encoding in an HTTP/1.0 request')
  // RFC 9112 section 3.2: a client MUST send Host in HTTP/1.1.
  if (head.host === null && head.minor === 1) throw new HeadError('malformed', 'missing Host header')
  // RFC 9112 section 3.2.2: with an absolute-form target the authority wins; we refuse a
  // Host that disagrees rather than pick one (routing and the backend must see the same name).
  if (head.authority !== null && (head.host === null || head.host.toLowerCase() !== head.authority.toLowerCase())) {
    throw new HeadError('malformed', 'the request target authority differs from Host')
  }

  const conn = head.connectionTokens
  if (head.minor === 1) head.keepAlive = conn === null || !conn.includes('close')
  else head.keepAlive = conn !== null && conn.includes('keep-alive') && !conn.includes('close')

  if (head.upgrade !== null && conn !== null && conn.includes('upgrade') && listHasToken(head.upgrade, 'websocket')) {
    if (head.method !== 'GET' || head.minor !== 1) throw new HeadError('malformed', 'a websocket upgrade must be an HTTP/1.1 GET')
    if (head.hasBody) throw new HeadError('malformed', 'an upgrade request with a body')
    if (head.wsKey === null || !isWebSocketKey(head.wsKey)) throw new HeadError('malformed', 'a missing or invalid Sec-WebSocket-Key')
    head.websocket = true
  }
  return head
}

function parseRequestLine(b: Uint8Array, s: string, eol: number, head: RequestHead): void {
  let sp1 = 0
  while (sp1 < eol && TOKEN[b[sp1]] === 1) sp1++
  if (sp1 === 0 || sp1 >= eol) throw new HeadError('malformed', 'a malformed request line')
  if (b[sp1] !== 32) throw new HeadError('malformed', 'an invalid method')
  let sp2 = sp1 + 1
  while (sp2 < eol && TARGET[b[sp2]] === 1) sp2++
  if (sp2 >= eol || sp2 === sp1 + 1) throw new HeadError('malformed', 'a malformed request line (HTTP/0.9 is not supported)')
  if (b[sp2] === 0x23) throw new HeadError('malformed', 'a fragment ("#...") in the request target')
  if (b[sp2] !== 32) throw new HeadError('malformed', 'an invalid character in the request target')
  const method = s.slice(0, sp1)
  let target = s.slice(sp1 + 1, sp2)
  const version = s.slice(sp2 + 1, eol)
  if (version === 'HTTP/1.1') head.minor = 1
  else if (version === 'HTTP/1.0') head.minor = 0
  else throw new HeadError('malformed', `unsupported protocol version ${JSON.stringify(version.slice(0, 16))}`)
  head.method = method

  const c0 = target.charCodeAt(0)
  if (c0 === 0x2f /* / */) {
    // origin-form, the common case
  } else if (target === '*') {
    if (method !== 'OPTIONS') throw new HeadError('malformed', '"*" target outside OPTIONS')
  } else if (method === 'CONNECT') {
    throw new HeadError('malformed', 'CONNECT is not supported by a reverse proxy')
  } else {
    // absolute-form (RFC 9112 section 3.2.2): the authority replaces Host, which must agree.
    const lower = target.slice(0, 8).toLowerCase()
    const schemeEnd = lower.startsWith('http://') ? 7 : lower.startsWith('https://') ? 8 : -1
    if (schemeEnd === -1) throw new HeadError('malformed', 'a request target that is neither a path nor an absolute http(s) URI')
    let authEnd = target.length
    for (let i = schemeEnd; i < target.length; i++) {
      const c = target.charCodeAt(i)
      if (c === 0x2f || c === 0x3f) { authEnd = i; break }
    }
    const authority = target.slice(schemeEnd, authEnd)
    if (authority.length === 0 || authority.includes('@') || !isValidHost(authority)) throw new HeadError('malformed', 'an invalid authority in the request target')
    head.authority = authority
    const rest = target.slice(authEnd)
    target = rest.length === 0 || rest.charCodeAt(0) === 0x3f ? `/${rest}` : rest
  }
  head.target = target
  const q = target.indexOf('?')
  head.path = q === -1 ? target : target.slice(0, q)
}

/** Why a complete request line (without CRLF) is unacceptable, or null: for early refusal. */
export function requestLineProblem(line: string): string | null {
  try {
    parseRequestLine(Buffer.from(line, 'latin1'), line, line.length, new RequestHead())
    return null
  } catch (err) {
    return (err as Error).message
  }
}

/** RFC 6455 section 4.1: the key is base64 of 16 bytes (24 characters ending in "=="). */
function isWebSocketKey(key: string): boolean {
  if (key.length !== 24 || !key.endsWith('==')) return false
  for (let i = 0; i < 22; i++) {
    const c = key.charCodeAt(i)
    const ok = (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c === 0x2b || c === 0x2f
    if (!ok) return false
  }
  return true
}
