// What request and response heads share: line endings and field lines (RFC 9112 sections
// 2.2 and 5). Both sides refuse what a second parser could read differently: bare CR or LF,
// obs-fold, whitespace before the colon, control characters in values.

import { HeadError } from './head-error.js'
import { FIELD_VALUE, TOKEN } from './syntax.js'

/** Throws unless every line of `s` ends with CRLF (a bare LF or CR anywhere is refused). */
export function checkLineEndings(s: string, what: string): void {
  // RFC 9112 section 2.2: a bare CR is invalid; we also refuse bare LF as a line terminator
  // (a recipient MAY accept it, but a backend that does not would see other lines than we do).
  let lf = s.indexOf('\n')
  while (lf !== -1) {
    if (lf === 0 || s.charCodeAt(lf - 1) !== 13) throw new HeadError('malformed', `bare LF in the ${what} head`)
    lf = s.indexOf('\n', lf + 1)
  }
  let cr = s.indexOf('\r')
  while (cr !== -1) {
    if (s.charCodeAt(cr + 1) !== 10) throw new HeadError('malformed', `bare CR in the ${what} head`)
    cr = s.indexOf('\r', cr + 1)
  }
}

/**
 * Reads the field lines of `s` from `pos` (the start of the line after the start line) into
 * `headers` (name as sent, value without surrounding whitespace, pairwise) and `lowerNames`.
 * `noUnderscore` refuses "_" in names (requests: see request-head.ts).
 */
export function readFieldLines(s: string, pos: number, maxCount: number, noUnderscore: boolean, what: string, headers: string[], lowerNames: string[]): void {
  let count = 0
  while (pos < s.length) {
    let end = s.indexOf('\r\n', pos)
    if (end === -1) end = s.length
    if (++count > maxCount) throw new HeadError('too_large', `more than ${maxCount} header fields in the ${what}`)
    const first = s.charCodeAt(pos)
    if (first === 32 || first === 9) throw new HeadError('malformed', `obs-fold (a header line starting with whitespace) in the ${what}`)
    const colon = s.indexOf(':', pos)
    if (colon === -1 || colon >= end) throw new HeadError('malformed', `a header line without a colon in the ${what}`)
    if (colon === pos) throw new HeadError('malformed', `an empty header name in the ${what}`)
    for (let i = pos; i < colon; i++) {
      const c = s.charCodeAt(i)
      if (TOKEN[c] === 0 || (noUnderscore && c === 0x5f)) {
        throw new HeadError('malformed', c === 0x5f ? 'a header name containing "_"' : `an invalid character in header name ${JSON.stringify(s.slice(pos, colon))}`)
      }
    }
    let vs = colon + 1
    let ve = end
    while (vs < ve && (s.charCodeAt(vs) === 32 || s.charCodeAt(vs) === 9)) vs++
    while (ve > vs && (s.charCodeAt(ve - 1) === 32 || s.charCodeAt(ve - 1) === 9)) ve--
    for (let i = vs; i < ve; i++) {
      if (FIELD_VALUE[s.charCodeAt(i)] === 0) throw new HeadError('malformed', `a control character in a header value in the ${what}`)
    }
    const name = s.slice(pos, colon)
    headers.push(name, s.slice(vs, ve))
    lowerNames.push(name.toLowerCase())
    pos = end + 2
  }
}
