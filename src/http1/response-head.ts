// Strict HTTP/1.1 response-head parser. Responses come from workspace containers that users
// control, so they get the same suspicion as requests: anything that could frame a body two
// ways is refused (the gateway answers 502 and drops that connection).

import { HeadError } from './head-error.js'
import { lineEndProblem, readFieldLines } from './field-lines.js'
import { FIELD_VALUE, parseDecimal } from './syntax.js'

export class ResponseHead {
  status = 0
  reason = ''
  minor = 1
  headers: string[] = []
  lowerNames: string[] = []
  contentLength = -1
  chunked = false
  /** Transfer-Encoding present without "chunked" last: the body runs until the upstream closes. */
  untilClose = false
  connectionTokens: string[] | null = null
  upgrade: string | null = null
  wsAccept: string | null = null
  /** The upstream will keep this connection open after the response. */
  keepAlive = true
}

/** `bytes`, when given, holds the same bytes as `s` (at least `s.length` of them). */
export function parseResponseHead(s: string, maxHeaderCount: number, bytes?: Uint8Array): ResponseHead {
  const b = bytes ?? Buffer.from(s, 'latin1')
  const end = s.length
  const head = new ResponseHead()
  let eol = 0
  while (eol < end && b[eol] !== 13 && b[eol] !== 10) eol++
  if (eol < end && (b[eol] !== 13 || eol + 1 >= end || b[eol + 1] !== 10)) throw new HeadError('malformed', lineEndProblem(b, eol, end, 'response'))
  // status-line = HTTP-version SP status-code SP [ reason-phrase ]; a missing final SP is
  // tolerated (common, and harmless: nothing follows the code).
  if (!s.startsWith('HTTP/1.')) throw new HeadError('malformed', 'a response that is not HTTP/1.x')
  const minor = s.charCodeAt(7) - 0x30
  if ((minor !== 0 && minor !== 1) || s.charCodeAt(8) !== 32) throw new HeadError('malformed', 'a malformed status line')
  head.minor = minor
  const d0 = s.charCodeAt(9) - 0x30, d1 = s.charCodeAt(10) - 0x30, d2 = s.charCodeAt(11) - 0x30
  if (d0 < 1 || d0 > 5 || d1 < 0 || d1 > 9 || d2 < 0 || d2 > 9) throw new HeadError('malformed', 'an invalid status code')
  head.status = d0 * 100 + d1 * 10 + d2
  if (eol > 12) {
    if (s.charCodeAt(12) !== 32) throw new HeadError('malformed', 'a malformed status line')
    for (let i = 13; i < eol; i++) if (FIELD_VALUE[b[i]] === 0) throw new HeadError('malformed', 'a control character in the reason phrase')
    head.reason = s.slice(13, eol)
  }

  readFieldLines(b, s, eol + 2, end, maxHeaderCount, false, 'response', head.headers, head.lowerNames)
  let te: string | null = null
  const fields = head.headers
  const lowers = head.lowerNames
  for (let j = 0; j < lowers.length; j++) {
    const lower = lowers[j]
    const value = fields[j * 2 + 1]
    switch (lower) {
      case 'content-length': {
        const n = parseDecimal(value)
        if (n < 0) throw new HeadError('malformed', 'an invalid Content-Length in the response')
        // RFC 9110 section 8.6: identical repeats may be folded; differing ones are fatal.
        if (head.contentLength !== -1 && head.contentLength !== n) throw new HeadError('malformed', 'conflicting Content-Length in the response')
        head.contentLength = n
        break
      }
      case 'transfer-encoding':
        te = te === null ? value : `${te}, ${value}`
        break
      case 'connection':
        for (const t of value.toLowerCase().split(',')) {
          const tok = t.trim()
          if (tok.length > 0) (head.connectionTokens ??= []).push(tok)
        }
        break
      case 'upgrade':
        head.upgrade = value
        break
      case 'sec-websocket-accept':
        head.wsAccept = head.wsAccept === null ? value : ''
        break
    }
  }
  if (te !== null) {
    if (head.contentLength !== -1) throw new HeadError('malformed', 'both Content-Length and Transfer-Encoding in the response')
    if (head.minor === 0) throw new HeadError('malformed', 'Transfer-Encoding in an HTTP/1.0 response')
    const codings = te.toLowerCase().split(',')
    const last = codings[codings.length - 1].trim()
    for (let i = 0; i < codings.length - 1; i++) {
      if (codings[i].trim() === 'chunked') throw new HeadError('malformed', 'chunked applied more than once or not last')
    }
    // RFC 9112 section 6.3 item 4: chunked last frames the body; otherwise it runs to close.
    if (last === 'chunked') head.chunked = true
    else head.untilClose = true
  }
  const conn = head.connectionTokens
  head.keepAlive = head.minor === 1 ? conn === null || !conn.includes('close') : conn !== null && conn.includes('keep-alive')
  if (head.untilClose) head.keepAlive = false
  return head
}
