// The admin listener's settings as the gateway's lifecycle applies them: resolved and checked
// at start (a problem is a StartupError that says what to fix), and re-checked on every
// reload before anything is swapped (a problem is a reload issue; the running ones stay).

import { access, constants } from 'node:fs/promises'
import { dirname } from 'node:path'
import type { ConfigIssue, GatewayConfig, RouteConfig } from '../config/types.js'
import { StartupError } from '../listeners/startup-error.js'
import { checkAdminRoutes } from './admin-routes.js'
import { ENV_TOKEN, isLoopbackHost, resolveAdminToken, type AdminToken } from './admin-token.js'

/**
 * The admin token for a starting gateway. Beyond loopback a token must be configured: a
 * generated one is only as secret as the state folder, and the listener is reachable by others.
 */
export async function startupAdminToken(config: GatewayConfig, env: NodeJS.ProcessEnv): Promise<AdminToken> {
  const loopback = isLoopbackHost(config.admin.host)
  const token = await resolveAdminToken(config.admin, config.stateFile, env, { generate: loopback })
  if (!loopback && (Array.isArray(token) || token.source === 'generated')) throw beyondLoopback(config.admin.host)
  if (Array.isArray(token)) throw new StartupError(`admin token: ${token.map((i) => `${i.path}: ${i.message}`).join('; ')}`)
  return token
}

/** How the start-up log names where the token is (never the token itself). */
export function describeToken(token: AdminToken): string {
  switch (token.source) {
    case 'config': return 'admin token: from admin.token in the config'
    case 'env': return `admin token: from ${ENV_TOKEN}`
    case 'tokenFile': return `admin token: from ${token.file}`
    case 'generated': return token.created
      ? `admin token: generated and stored in ${token.file} (mode 0600); the operator CLI reads it from there`
      : `admin token: stored in ${token.file}`
  }
}

function beyondLoopback(host: string): StartupError {
  return new StartupError(`the admin listener binds ${host}, beyond loopback, and no admin token is configured. ` +
    `Fix: set admin.token, ${ENV_TOKEN} or admin.tokenFile, or bind admin.host to 127.0.0.1`)
}

/**
 * Checks what a reload to `next` means for the admin side: the admin address cannot move
 * (that needs a restart), the token is resolved again (a rotated tokenFile takes effect), the
 * admin routes must still be valid against the new upstreams and config route ids, and the
 * access log's folder must be writable.
 *
 * `adminApi: false` (a worker, which has no admin listener) skips the token: the primary has
 * resolved it, and a worker resolving it too could generate a second one.
 */
export async function prepareAdminReload(
  next: GatewayConfig, current: GatewayConfig, adminRoutes: readonly RouteConfig[], env: NodeJS.ProcessEnv, adminApi = true,
): Promise<{ token: AdminToken | null } | { errors: ConfigIssue[] }> {
  const errors: ConfigIssue[] = []
  if (next.admin.host !== current.admin.host || next.admin.port !== current.admin.port) {
    errors.push({ path: 'admin', message: 'moving the admin listener (admin.host, admin.port) needs a restart' })
  }
  const loopback = isLoopbackHost(current.admin.host)
  // The generated token lives next to the state file, which a reload cannot move: resolved
  // against the running one, a reload refused for changing stateFile writes nothing.
  const token = adminApi ? await resolveAdminToken(next.admin, current.stateFile, env, { generate: loopback }) : null
  if (Array.isArray(token)) errors.push(...token)
  else if (token?.source === 'generated' && !loopback) errors.push({ path: 'admin.token', message: beyondLoopback(current.admin.host).message })
  const routes = checkAdminRoutes(adminRoutes, 'routes', next, Infinity)
  if ('errors' in routes) {
    for (const e of routes.errors) errors.push({ path: `stateFile.${e.path}`, message: `admin route: ${e.message}` })
  }
  if (next.accessLog.enabled && next.accessLog.path !== null) {
    const dir = dirname(next.accessLog.path)
    try {
      await access(dir, constants.W_OK)
    } catch (err) {
      errors.push({ path: 'accessLog.path', message: `cannot write in ${dir}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}` })
    }
  }
  if (errors.length > 0 || Array.isArray(token)) return { errors }
  return { token }
}
