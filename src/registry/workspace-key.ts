// The two URL shapes that name a workspace server (contract: "Where it sits"). Both run on
// every request, so they are charCode loops: no regex, no split, one allocation for the key.
// The key only says which registry entry to look up; the target always comes from the
// registry entry, never from the URL (an open proxy is what this prevents).

import { MAX_KEY_LENGTH, parsePort } from './server-entry.js'

const MAX_HOST_LENGTH = 253

function lower(c: number): number {
  return c >= 0x41 && c <= 0x5a ? c + 0x20 : c
}

/** [a-zA-Z0-9-] */
function isLabelChar(c: number): boolean {
  return (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || (c >= 0x30 && c <= 0x39) || c === 0x2d
}

/**
 * Checks that `s[start, end)` is a DNS name or dotted IPv4 address (RFC 1123 section 2.1:
 * labels of letters, digits and hyphens, 1..63 characters, not starting or ending with a
 * hyphen; 253 characters in all). Returns whether any letter is uppercase (-1 when invalid).
 */
function scanHost(s: string, start: number, end: number): number {
  const len = end - start
  if (len < 1 || len > MAX_HOST_LENGTH) return -1
  let upper = 0
  let labelStart = start
  for (let i = start; i <= end; i++) {
    const c = i === end ? 0x2e : s.charCodeAt(i)
    if (c === 0x2e /* . */) {
      const labelLen = i - labelStart
      if (labelLen === 0 || labelLen > 63) return -1
      if (s.charCodeAt(labelStart) === 0x2d || s.charCodeAt(i - 1) === 0x2d) return -1
      labelStart = i + 1
    } else if (!isLabelChar(c)) {
      return -1
    } else if (c >= 0x41 && c <= 0x5a) {
      upper = 1
    }
  }
  return upper
}

/**
 * The registry key of a path route: the first path segment when it is `{port}_{host}`
 * (`/32770_node1.example.com/api` -> `32770_node1.example.com`), port 1..65535 without a
 * leading zero, host a DNS name or IPv4 address (lowercased). `path` is the request target's
 * path (a query after `?` is ignored). Anything else, including percent-encoded bytes in the
 * segment, is not a workspace path: null.
 */
export function pathKey(path: string): { key: string } | null {
  if (path.charCodeAt(0) !== 0x2f /* / */) return null
  let end = path.length
  let underscore = -1
  for (let i = 1; i < path.length; i++) {
    const c = path.charCodeAt(i)
    if (c === 0x2f || c === 0x3f /* ? */) {
      end = i
      break
    }
    if (c === 0x5f /* _ */ && underscore < 0) underscore = i
  }
  if (underscore < 0 || end - 1 > MAX_KEY_LENGTH || parsePort(path, 1, underscore) < 0) return null
  const upper = scanHost(path, underscore + 1, end)
  if (upper < 0) return null
  const key = path.slice(1, end)
  return { key: upper === 1 ? key.toLowerCase() : key }
}

/**
 * The registry key of a host route: the Host header's name when it ends with `hostSuffix`
 * (compared case-insensitively), lowercased, without `:port`. The name before the suffix must
 * be non-empty, and a suffix without a leading dot must still start at a label boundary
 * (`evilws.example.com` does not match `ws.example.com`). IPv6 literals never match.
 */
export function hostKey(host: string, hostSuffix: string | null): string | null {
  if (hostSuffix === null || hostSuffix.length === 0) return null
  let end = host.length
  // Strip ":port" (RFC 9110 section 7.2: Host = uri-host [ ":" port ]).
  for (let i = host.length - 1; i >= 0; i--) {
    const c = host.charCodeAt(i)
    if (c === 0x3a /* : */) {
      if (i === host.length - 1) return null
      end = i
      break
    }
    if (c < 0x30 || c > 0x39) break
  }
  const suffixLen = hostSuffix.length
  const nameEnd = end - suffixLen
  if (nameEnd <= 0) return null
  for (let i = 0; i < suffixLen; i++) {
    if (lower(host.charCodeAt(nameEnd + i)) !== lower(hostSuffix.charCodeAt(i))) return null
  }
  if (hostSuffix.charCodeAt(0) !== 0x2e && host.charCodeAt(nameEnd - 1) !== 0x2e) return null
  const upper = scanHost(host, 0, end)
  if (upper < 0) return null
  const key = end === host.length ? host : host.slice(0, end)
  return upper === 1 ? key.toLowerCase() : key
}
