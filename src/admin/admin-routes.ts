// Admin-managed routes: the checks every set of them passes before it can be applied, whether
// it comes from `PUT /routes`, `PUT /routes/{id}`, the state file at start, or a reload that
// changes the config under them. The config's own schema (config/validate.ts) does the field
// checks; this adds what only holds across both sets: admin route ids never take a config
// route's id (deleting or replacing "master" through the API would be a silent surprise).

import { isPlainObject, withRouteDefaults } from '../config/defaults.js'
import type { ConfigIssue, GatewayConfig, RouteConfig } from '../config/types.js'
import { validateRoutes } from '../config/validate.js'

/**
 * `routes` checked against `config` (upstream names, config route ids, metadata targets);
 * `path` is the JSON path of the array (`routes`). The routes come back with defaults applied.
 * Routes before `firstWritten` are ones stored earlier, kept as they are: the length bounds on
 * ids and prefixes (newer than some state files) apply only to what a request writes now.
 */
export function checkAdminRoutes(routes: unknown, path: string, config: GatewayConfig, firstWritten = 0): { routes: RouteConfig[] } | { errors: ConfigIssue[] } {
  const withDefaults = Array.isArray(routes) ? routes.map(withRouteDefaults) : routes
  const errors = validateRoutes(withDefaults, path, new Set(Object.keys(config.upstreams)), config.admin.allowMetadataTargets, firstWritten)
  if (Array.isArray(withDefaults)) {
    const configIds = new Set(config.routes.map((r) => r.id))
    withDefaults.forEach((r, i) => {
      if (isPlainObject(r) && typeof r.id === 'string' && configIds.has(r.id)) {
        errors.push({ path: `${path}[${i}].id`, message: `${JSON.stringify(r.id)} is the id of a config route; admin routes need ids of their own` })
      }
    })
  }
  if (errors.length > 0) return { errors }
  return { routes: structuredClone(withDefaults) as RouteConfig[] }
}

/** The admin routes section of the state file, checked; throws an Error naming the file and each bad path. */
export function storedAdminRoutes(section: unknown, stateFile: string, config: GatewayConfig): RouteConfig[] {
  if (section === undefined) return []
  const checked = checkAdminRoutes(section, 'routes', config, Infinity)
  if ('routes' in checked) return checked.routes
  const lines = checked.errors.map((e) => `  ${stateFile}: ${e.path}: ${e.message}`)
  throw new Error(`the admin routes stored in the state file ${stateFile} are invalid:\n${lines.join('\n')}\n` +
    'Fix them (or the config they depend on), or remove the "routes" section to start without admin routes.')
}
