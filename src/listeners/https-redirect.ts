// The answer of a plain-HTTP listener with `redirectToHttps` (HAProxy's `redirect scheme https`,
// Traefik's redirectScheme): the same host and request target on the HTTPS port. GET and HEAD
// get 302 (301 when permanent); other methods 307 (308), which a browser repeats with the same
// method and body instead of turning them into a GET.

import type { HttpsRedirectConfig } from '../config/types.js'
import type { RequestHead } from '../http1/request-head.js'

// What a host name or an IPv4 address may contain (RFC 3986 reg-name, without "%" escapes).
const NAME = /^[A-Za-z0-9._~!$&'()*+,;=-]+$/
const IPV6_LITERAL = /^\[[0-9A-Fa-f:.]+\]$/
const PORT = /^[0-9]{1,5}$/

/**
 * The Location for `head` on the HTTPS port, or null when there is none: no Host (HTTP/1.0), a
 * Host that cannot name a URL's host as it is (an empty port, a bracket out of place), or the
 * target `*` (OPTIONS for the server as a whole). The parser
 * already refused anything outside the authority characters, so no "/", "@", "?", "#" or
 * space can reach the URL and move it to another host.
 */
export function httpsLocation(head: RequestHead, redirect: HttpsRedirectConfig): string | null {
  const host = head.host
  if (host === null || head.target === '*') return null
  let name: string
  if (host.charCodeAt(0) === 0x5b /* [ */) {
    const close = host.indexOf(']')
    if (close === -1) return null
    name = host.slice(0, close + 1)
    if (!IPV6_LITERAL.test(name)) return null
    if (close + 1 < host.length && !(host.charCodeAt(close + 1) === 0x3a && PORT.test(host.slice(close + 2)))) return null
  } else {
    const colon = host.indexOf(':')
    name = colon === -1 ? host : host.slice(0, colon)
    if (!NAME.test(name)) return null
    if (colon !== -1 && !PORT.test(host.slice(colon + 1))) return null
  }
  const port = redirect.port === 443 ? '' : `:${redirect.port}`
  return `https://${name.toLowerCase()}${port}${head.target}`
}

/** The redirect status for this request's method. */
export function redirectStatus(method: string, permanent: boolean): number {
  const safe = method === 'GET' || method === 'HEAD'
  if (permanent) return safe ? 301 : 308
  return safe ? 302 : 307
}

const REASONS: Record<number, string> = { 301: 'Moved Permanently', 302: 'Found', 307: 'Temporary Redirect', 308: 'Permanent Redirect' }

/**
 * The redirect as the bytes written to the client. The connection closes after it: the
 * client's next requests go to the HTTPS listener, and a request body is not read.
 */
export function renderRedirect(status: number, location: string): Buffer {
  return Buffer.from(`HTTP/1.1 ${status} ${REASONS[status]}\r\n` +
    `location: ${location}\r\n` +
    'content-length: 0\r\n' +
    'connection: close\r\n' +
    '\r\n', 'latin1')
}
