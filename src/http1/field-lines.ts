// What request and response heads share: line endings and field lines (RFC 9112 sections
// 2.2 and 5). Both sides refuse what a second parser could read differently: bare CR or LF,
// obs-fold, whitespace before the colon, control characters in values.
//
// The scan runs over the head's bytes in one pass (a Uint8Array read is about twice as fast
// as String.charCodeAt, and no indexOf call per line); strings are cut from the latin1 copy
// of the same bytes only for what is kept.

import { HeadError } from './head-error.js'
import { FIELD_VALUE, TOKEN } from './syntax.js'

/** Why the byte at `pos` (a CR, an LF or another control character) ends a line wrongly. */
export function lineEndProblem(b: Uint8Array, pos: number, end: number, what: string): string {
  const c = b[pos]
  if (c === 10) return `bare LF in the ${what} head`
  if (c === 13 && (pos + 1 >= end || b[pos + 1] !== 10)) return `bare CR in the ${what} head`
  return `a control character in the ${what} head`
}

/**
 * Reads the field lines of `b[pos..end)` into `headers` (name as sent, value without
 * surrounding whitespace, pairwise) and `lowerNames`. `s` holds the same bytes as latin1
 * (at least up to `end`); `pos` is the start of the line after the start line.
 * `noUnderscore` refuses "_" in names (requests: see request-head.ts).
 */
export function readFieldLines(b: Uint8Array, s: string, pos: number, end: number, maxCount: number, noUnderscore: boolean, what: string, headers: string[], lowerNames: string[]): void {
  const token = TOKEN
  const value = FIELD_VALUE
  let count = 0
  while (pos < end) {
    if (++count > maxCount) throw new HeadError('too_large', `more than ${maxCount} header fields in the ${what}`)
    const start = pos
    let c = b[pos]
    if (c === 32 || c === 9) throw new HeadError('malformed', `obs-fold (a header line starting with whitespace) in the ${what}`)
    for (; pos < end; pos++) {
      c = b[pos]
      if (token[c] === 0) break
      if (c === 0x5f && noUnderscore) throw new HeadError('malformed', 'a header name containing "_"')
    }
    if (pos === end || c !== 0x3a) {
      if (pos === end || c === 13 || c === 10) {
        const bad = pos < end && (c === 10 || b[pos + 1] !== 10 || pos + 1 >= end)
        throw new HeadError('malformed', bad ? lineEndProblem(b, pos, end, what) : `a header line without a colon in the ${what}`)
      }
      throw new HeadError('malformed', `an invalid character in header name ${JSON.stringify(s.slice(start, Math.min(pos + 1, start + 64)))}`)
    }
    if (pos === start) throw new HeadError('malformed', `an empty header name in the ${what}`)
    const colon = pos++
    while (pos < end && ((c = b[pos]) === 32 || c === 9)) pos++
    const vs = pos
    for (; pos < end; pos++) if (value[b[pos]] === 0) break
    let ve = pos
    while (ve > vs && ((c = b[ve - 1]) === 32 || c === 9)) ve--
    if (pos < end) {
      // The only control bytes allowed in a field section are the CRLF ending each line.
      if (b[pos] !== 13 || pos + 1 >= end || b[pos + 1] !== 10) {
        const problem = b[pos] === 13 || b[pos] === 10 ? lineEndProblem(b, pos, end, what) : `a control character in a header value in the ${what}`
        throw new HeadError('malformed', problem)
      }
      pos += 2
    }
    const name = s.slice(start, colon)
    headers.push(name, s.slice(vs, ve))
    lowerNames.push(name.toLowerCase())
  }
}
