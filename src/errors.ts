// Every answer the gateway makes itself, in one table (contract: "Responses the gateway makes
// itself"). Low-level failures are translated into a GatewayError where they happen; one
// function (`renderError`) turns it into bytes.

export const ERRORS = {
  bad_request: 400,
  no_route: 404,
  unknown_workspace_server: 404,
  request_timeout: 408,
  precondition_failed: 412,
  body_too_large: 413,
  headers_too_large: 431,
  upstream_unreachable: 502,
  upstream_reset: 502,
  upstream_bad_response: 502,
  registry_unavailable: 503,
  no_healthy_upstream: 503,
  over_capacity: 503,
  upstream_timeout: 504,
} as const

export type ErrorCode = keyof typeof ERRORS

const REASONS: Record<number, string> = {
  400: 'Bad Request', 403: 'Forbidden', 404: 'Not Found', 408: 'Request Timeout', 412: 'Precondition Failed',
  413: 'Payload Too Large', 431: 'Request Header Fields Too Large', 502: 'Bad Gateway',
  503: 'Service Unavailable', 504: 'Gateway Timeout',
}

export class GatewayError extends Error {
  readonly code: ErrorCode
  readonly statusCode: number
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'GatewayError'
    this.code = code
    this.statusCode = ERRORS[code]
  }
}

export function reasonPhrase(status: number): string {
  return REASONS[status] ?? 'Error'
}

export interface ErrorRequest {
  /** The client's Accept header: API clients asking for JSON get a JSON body. */
  readonly accept: string | null
  /** An upstream's maintenance page, served as a 503 to browsers when it cannot answer. */
  readonly errorPage: string | null
  /** A HEAD request: the head says what the body would be, and no body follows. */
  readonly head: boolean
}

const NO_REQUEST: ErrorRequest = { accept: null, errorPage: null, head: false }

/**
 * The gateway's own response, as the bytes written to the client. `close` adds
 * `Connection: close` (every framing error ends the connection: after one, the byte stream
 * can no longer be trusted, RFC 9112 section 11.2). `request` is what the client asked, when
 * its head was read: the error page stands in for an upstream as HAProxy's errorfile did, and
 * an answer to HEAD has no body (RFC 9110 section 9.3.2: a client would read one as the start
 * of the next response).
 */
export function renderError(err: GatewayError, close: boolean, request: ErrorRequest = NO_REQUEST): Buffer {
  const { accept, errorPage } = request
  let status = err.statusCode
  let type = 'text/plain; charset=utf-8'
  let body: string
  if (errorPage !== null && status >= 502 && accept !== null && accept.includes('text/html')) {
    status = 503
    type = 'text/html; charset=utf-8'
    body = errorPage
  } else if (accept !== null && accept.includes('application/json') && !accept.includes('text/html')) {
    type = 'application/json'
    body = `${JSON.stringify({ error: err.code, status, message: err.message })}\n`
  } else {
    body = `${status} ${reasonPhrase(status)}: ${err.code}: ${err.message}\n`
  }
  return Buffer.from(`HTTP/1.1 ${status} ${reasonPhrase(status)}\r\n` +
    `x-gateway-error: ${err.code}\r\n` +
    `content-type: ${type}\r\n` +
    'cache-control: no-store\r\n' +
    `content-length: ${Buffer.byteLength(body)}\r\n` +
    (close ? 'connection: close\r\n' : '') +
    '\r\n' + (request.head ? '' : body), 'utf8')
}
