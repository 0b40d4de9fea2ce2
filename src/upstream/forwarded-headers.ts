// The two head rewrites on the hot path: the request as the upstream sees it and the response
// as the client sees it. Both copy field names byte for byte (some backends and browsers still
// care about case, e.g. X-CSRF-Token) and drop hop-by-hop fields (RFC 9110 section 7.6.1),
// including every field the Connection header names.

import type { RequestHead } from '../http1/request-head.js'
import type { ResponseHead } from '../http1/response-head.js'

export interface ForwardContext {
  clientAddress: string
  /** "http" or "https": the listener's own, never what the client claims. */
  proto: string
  /** The listener's port, as the client reached it. */
  port: number
  /** From `requestIdOf`: kept from the client or made by the gateway. */
  requestId: string
  /** Cookie names removed from the Cookie header (workspace requests only), or null. */
  stripCookies: ReadonlySet<string> | null
}

/** Fields never forwarded, whatever Connection says. */
function isHopByHop(lower: string): boolean {
  switch (lower) {
    case 'connection':
    case 'keep-alive':
    case 'proxy-connection':
    case 'te':
    case 'upgrade':
    case 'proxy-authenticate':
    case 'proxy-authorization':
      return true
    default:
      return false
  }
}

/** Fields the framing depends on: a Connection header naming them does not remove them. */
function isFraming(lower: string): boolean {
  return lower === 'content-length' || lower === 'transfer-encoding' || lower === 'host'
}

/**
 * The request head sent upstream. HTTP/1.0 clients are forwarded as HTTP/1.0 so the upstream
 * answers in a framing they can read (no chunked).
 */
export function serializeRequestHead(head: RequestHead, ctx: ForwardContext): string {
  let out = `${head.method} ${head.target} HTTP/1.${head.minor}\r\n`
  const names = head.headers
  const lowers = head.lowerNames
  const connTokens = head.connectionTokens
  let xff: string | null = null
  for (let i = 0, j = 0; i < names.length; i += 2, j++) {
    const lower = lowers[j]
    if (isHopByHop(lower)) continue
    if (connTokens !== null && !isFraming(lower) && connTokens.includes(lower)) continue
    if (lower.charCodeAt(0) === 0x78 /* x */) {
      switch (lower) {
        case 'x-forwarded-for':
          xff = xff === null ? names[i + 1] : `${xff}, ${names[i + 1]}`
          continue
        case 'x-forwarded-proto':
        case 'x-forwarded-host':
        case 'x-forwarded-port':
          continue // set below from what the gateway saw; a client's claim is not trusted
        case 'x-request-id':
          continue // ctx.requestId is the client's own when it sent a usable one (requestIdOf)
      }
    } else if (lower === 'cookie' && ctx.stripCookies !== null) {
      const kept = stripCookies(names[i + 1], ctx.stripCookies)
      if (kept.length > 0) out += `${names[i]}: ${kept}\r\n`
      continue
    }
    out += `${names[i]}: ${names[i + 1]}\r\n`
  }
  if (head.websocket) out += 'Connection: Upgrade\r\nUpgrade: websocket\r\n'
  else if (head.minor === 0) out += 'Connection: close\r\n'
  out += `X-Forwarded-For: ${xff === null ? ctx.clientAddress : `${xff}, ${ctx.clientAddress}`}\r\n`
  out += `X-Forwarded-Proto: ${ctx.proto}\r\n`
  if (head.host !== null) out += `X-Forwarded-Host: ${head.host}\r\n`
  out += `X-Forwarded-Port: ${ctx.port}\r\nX-Request-Id: ${ctx.requestId}\r\n\r\n`
  return out
}

/** The request id the upstream sees: the client's when it sent a usable one. */
export function requestIdOf(head: RequestHead, fallback: string): string {
  const lowers = head.lowerNames
  for (let j = 0; j < lowers.length; j++) {
    if (lowers[j] === 'x-request-id') {
      const v = head.headers[j * 2 + 1]
      return v.length > 0 && v.length <= 200 ? v : fallback
    }
  }
  return fallback
}

/** Removes the named cookies from a Cookie header value ("a=1; b=2"). */
export function stripCookies(value: string, names: ReadonlySet<string>): string {
  let out = ''
  let start = 0
  while (start < value.length) {
    let end = value.indexOf(';', start)
    if (end === -1) end = value.length
    const pair = value.slice(start, end).trim()
    const eq = pair.indexOf('=')
    const name = eq === -1 ? pair : pair.slice(0, eq).trim()
    if (pair.length > 0 && !names.has(name)) out = out.length === 0 ? pair : `${out}; ${pair}`
    start = end + 1
  }
  return out
}

/**
 * The response head sent to the client. `close` adds Connection: close (the gateway will
 * close the client connection after this response). For a 101 the Upgrade and Connection
 * fields are the handshake itself and are kept.
 */
export function serializeResponseHead(head: ResponseHead, close: boolean): string {
  let out = `HTTP/1.1 ${head.status} ${head.reason}\r\n`
  const names = head.headers
  const lowers = head.lowerNames
  const connTokens = head.connectionTokens
  const upgrade = head.status === 101
  for (let i = 0, j = 0; i < names.length; i += 2, j++) {
    const lower = lowers[j]
    if (upgrade && (lower === 'connection' || lower === 'upgrade')) {
      out += `${names[i]}: ${names[i + 1]}\r\n`
      continue
    }
    if (isHopByHop(lower)) continue
    if (connTokens !== null && !isFraming(lower) && connTokens.includes(lower)) continue
    out += `${names[i]}: ${names[i + 1]}\r\n`
  }
  if (close && !upgrade) out += 'Connection: close\r\n'
  return `${out}\r\n`
}
