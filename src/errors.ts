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

/**
 * The gateway's own response, as the bytes written to the client. `close` adds
 * `Connection: close` (every framing error ends the connection: after one, the byte stream
 * can no longer be trusted, RFC 9112 section 11.2).
 */
export function renderError(err: GatewayError, close: boolean): string {
  const body = `${err.statusCode} ${reasonPhrase(err.statusCode)}: ${err.code}: ${err.message}\n`
  return `HTTP/1.1 ${err.statusCode} ${reasonPhrase(err.statusCode)}\r\n` +
    `x-gateway-error: ${err.code}\r\n` +
    'content-type: text/plain; charset=utf-8\r\n' +
    `content-length: ${Buffer.byteLength(body)}\r\n` +
    (close ? 'connection: close\r\n' : '') +
    '\r\n' + body
}
