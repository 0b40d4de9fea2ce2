// The operator CLI's side of the admin API: where the admin listener is and which token to
// send, both read from the same config the gateway runs on (admin-token.ts resolves the token
// the way the gateway does, but never makes one).

import { isIPv6 } from 'node:net'
import type { ConfigIssue, GatewayConfig } from '../config/types.js'
import { resolveAdminToken } from './admin-token.js'

export interface AdminReply {
  readonly status: number
  readonly body: unknown
}

export class AdminClient {
  private constructor(readonly baseUrl: string, private readonly token: string) {}

  /** A client for the gateway `config` describes, or the issues that stand in the way. */
  static async forConfig(config: GatewayConfig, env: NodeJS.ProcessEnv): Promise<AdminClient | ConfigIssue[]> {
    const token = await resolveAdminToken(config.admin, config.stateFile, env, { generate: false })
    if (Array.isArray(token)) return token
    return new AdminClient(adminUrl(config.admin.host, config.admin.port), token.token)
  }

  /** One call; rejects only when the admin listener cannot be reached. */
  async call(method: string, path: string, body?: unknown): Promise<AdminReply> {
    let res: Response
    try {
      res = await fetch(`${this.baseUrl}${path}`, {
        method,
        headers: {
          authorization: `Bearer ${this.token}`,
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(30_000),
      })
    } catch (err) {
      const cause = (err as { cause?: { code?: string; message?: string } }).cause
      const reason = cause?.code ?? cause?.message ?? (err as Error).message
      throw new Error(`cannot reach the admin API at ${this.baseUrl}: ${reason} (is the gateway running with this config?)`, { cause: err })
    }
    const text = await res.text()
    let parsed: unknown = text
    if ((res.headers.get('content-type') ?? '').includes('json')) {
      try {
        parsed = JSON.parse(text)
      } catch {
        // keep the text
      }
    }
    return { status: res.status, body: parsed }
  }
}

/** The URL the admin listener answers on; a wildcard bind is reached over loopback. */
export function adminUrl(host: string, port: number): string {
  const h = host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '::1' : host
  return `http://${isIPv6(h) ? `[${h}]` : h}:${port}`
}

/** The `{"errors": [...]}` of an error reply as lines; the status line when there are none. */
export function errorLines(reply: AdminReply): string[] {
  const errors = (reply.body as { errors?: unknown } | null)?.errors
  if (Array.isArray(errors) && errors.length > 0) {
    return errors.map((e: { path?: unknown; message?: unknown }) => e.path ? `${String(e.path)}: ${String(e.message)}` : String(e.message))
  }
  return [`the admin API answered ${reply.status}${typeof reply.body === 'string' && reply.body !== '' ? `: ${reply.body.trim()}` : ''}`]
}
