// Character classes of HTTP/1.1 (RFC 9110 section 5.6.2 tchar, 5.5 field-value), as lookup
// tables: the parsers test every byte of every head, so a table beats a regex.

/** tchar: "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA */
export const TOKEN = new Uint8Array(256)
for (let c = 0; c < 256; c++) {
  const ch = String.fromCharCode(c)
  TOKEN[c] = (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || "!#$%&'*+-.^_`|~".includes(ch) ? 1 : 0
}

/** field-vchar / SP / HTAB / obs-text: what may appear inside a field value. */
export const FIELD_VALUE = new Uint8Array(256)
for (let c = 0; c < 256; c++) FIELD_VALUE[c] = c === 0x09 || (c >= 0x20 && c !== 0x7f) ? 1 : 0

/**
 * What a request-target may contain: VCHAR only (RFC 9112 section 3.2; no SP, no CTL, no
 * obs-text), and no "#": a fragment is never part of a request-target (RFC 9112 section 3.2,
 * RFC 3986 section 3.5); passed on, it reaches the upstream as part of the path or query.
 */
export const TARGET = new Uint8Array(256)
for (let c = 0x21; c < 0x7f; c++) TARGET[c] = c === 0x23 ? 0 : 1

/** Host header / authority characters: reg-name, IPv4, IP-literal and ":port" (RFC 3986 section 3.2.2). */
export const AUTHORITY = new Uint8Array(256)
for (let c = 0; c < 256; c++) {
  const ch = String.fromCharCode(c)
  AUTHORITY[c] = (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || "-._~!$&'()*+,;=:[]%".includes(ch) ? 1 : 0
}

export function isToken(s: string): boolean {
  if (s.length === 0) return false
  for (let i = 0; i < s.length; i++) if (TOKEN[s.charCodeAt(i) & 0xff] === 0 || s.charCodeAt(i) > 0xff) return false
  return true
}

export function isValidHost(s: string): boolean {
  if (s.length === 0 || s.length > 1024) return false
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c > 0xff || AUTHORITY[c] === 0) return false
  }
  return true
}

/** Parses an unsigned decimal of at most 15 digits (below 2^53), or -1. */
export function parseDecimal(s: string): number {
  if (s.length === 0 || s.length > 15) return -1
  let n = 0
  for (let i = 0; i < s.length; i++) {
    const d = s.charCodeAt(i) - 0x30
    if (d < 0 || d > 9) return -1
    n = n * 10 + d
  }
  return n
}

/** True when the comma-separated header value lists `token` (case-insensitive). */
export function listHasToken(value: string, token: string): boolean {
  const v = value.toLowerCase()
  let start = 0
  while (start <= v.length) {
    let end = v.indexOf(',', start)
    if (end === -1) end = v.length
    if (v.slice(start, end).trim() === token) return true
    start = end + 1
  }
  return false
}
