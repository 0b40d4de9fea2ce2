// `/routes` and `/routes/{id}` (contract: "Admin API"). Config routes are listed but belong to
// the config file; the API manages its own set, which replaces whole on every change:
// validated first (admin-routes.ts), then persisted and swapped in by Gateway.setAdminRoutes,
// so a request sees the old table or the new one. Every change bumps `version`; a client
// that sends `If-Match: <version>` (as read from GET /routes or its ETag) gets 412 when
// another change came first, and nothing changes.

import type { IncomingMessage, ServerResponse } from 'node:http'
import type { ConfigIssue, RouteConfig } from '../config/types.js'
import { joinPath, show, validateRouteId } from '../config/validate.js'
import type { Gateway } from '../gateway.js'
import { checkAdminRoutes } from './admin-routes.js'
import { readIgnoredBody, readJson, sendBodyError, sendErrors, sendJson } from './admin-http.js'

/** Largest `PUT /routes` body (a few thousand routes), bytes. */
const ROUTES_BODY_BYTES = 4 * 1024 * 1024
/** Largest `PUT /routes/{id}` body, bytes. */
const ROUTE_BODY_BYTES = 64 * 1024

type Serialize = <T>(fn: () => Promise<T>) => Promise<T>

/** A refusal decided inside the serialized section. */
class Refusal {
  constructor(readonly status: number, readonly errors: ConfigIssue[], readonly headers: Record<string, string> = {}) {}
}

export class RoutesApi {
  constructor(private readonly gateway: Gateway, private readonly serialize: Serialize) {}

  async handle(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    const method = req.method ?? 'GET'
    if (path === '/routes') {
      switch (method) {
        case 'GET':
        case 'HEAD':
          this.sendList(res)
          return
        case 'PUT':
          await this.replaceAll(req, res)
          return
      }
      methodNotAllowed(res, method, 'GET, HEAD, PUT')
      return
    }
    const raw = path.slice('/routes/'.length)
    let id: string
    try {
      id = decodeURIComponent(raw)
    } catch {
      sendErrors(res, 400, [{ path: 'id', message: 'is not valid percent-encoding' }])
      return
    }
    if (id === '' || raw.includes('/')) {
      sendErrors(res, 404, [{ path, message: 'no such admin endpoint' }])
      return
    }
    switch (method) {
      case 'GET':
      case 'HEAD': {
        const found = this.gateway.routes().routes.find((r) => r.id === id)
        if (found === undefined) {
          const missing = noSuchRoute(id)
          sendErrors(res, missing.status, missing.issues)
        } else {
          sendJson(res, 200, { version: this.gateway.version, route: found }, this.etag())
        }
        return
      }
      case 'PUT':
        await this.putOne(req, res, id)
        return
      case 'DELETE':
        await this.deleteOne(req, res, id)
        return
    }
    methodNotAllowed(res, method, 'GET, HEAD, PUT, DELETE')
  }

  private sendList(res: ServerResponse, status = 200): void {
    const { version, routes } = this.gateway.routes()
    sendJson(res, status, { version, routes }, this.etag())
  }

  private etag(): Record<string, string> {
    return { etag: `"${this.gateway.version}"` }
  }

  /** PUT /routes: `{"routes": [...]}` becomes the whole admin-managed set. */
  private async replaceAll(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let body: unknown
    try {
      body = await readJson(req, ROUTES_BODY_BYTES)
    } catch (err) {
      sendBodyError(res, err)
      return
    }
    if (!isObject(body) || !Object.hasOwn(body, 'routes')) {
      sendErrors(res, 400, [{ path: '', message: 'the body must be an object {"routes": [...]}' }])
      return
    }
    const extra = Object.keys(body).filter((k) => k !== 'routes')
    if (extra.length > 0) {
      sendErrors(res, 400, extra.map((k) => ({ path: joinPath('', k), message: `unknown key ${JSON.stringify(k)} (the body is {"routes": [...]})` })))
      return
    }
    await this.change(req, res, 200, () => {
      const checked = checkAdminRoutes(body.routes, 'routes', this.gateway.config)
      if ('errors' in checked) throw new Refusal(400, checked.errors)
      return checked.routes
    })
  }

  /** PUT /routes/{id}: adds the route, or replaces the admin route with that id. */
  private async putOne(req: IncomingMessage, res: ServerResponse, id: string): Promise<void> {
    let body: unknown
    try {
      body = await readJson(req, ROUTE_BODY_BYTES)
    } catch (err) {
      sendBodyError(res, err)
      return
    }
    if (!isObject(body)) {
      sendErrors(res, 400, [{ path: '', message: 'the body must be a route object' }])
      return
    }
    if (body.id !== undefined && body.id !== id) {
      sendErrors(res, 400, [{ path: 'id', message: `${show(body.id)} does not match the id in the URL (${show(id)})` }])
      return
    }
    const route = { ...body, id }
    let created = false
    await this.change(req, res, () => created ? 201 : 200, (current) => {
      this.refuseConfigRoute(id, 'replaced')
      const at = current.findIndex((r) => r.id === id)
      created = at < 0
      // Checked with this route last, so that a clash with another route is reported on this
      // one (the body), not on the other; then put back in its place.
      const others = current.filter((r) => r.id !== id)
      const checked = checkAdminRoutes([...others, route], 'routes', this.gateway.config, others.length)
      if ('errors' in checked) throw new Refusal(400, checked.errors.map((e) => relativeTo(e, `routes[${others.length}]`)))
      const routes = checked.routes.slice(0, -1)
      routes.splice(created ? routes.length : at, 0, checked.routes[others.length])
      return routes
    })
  }

  /** DELETE /routes/{id}: admin routes only. */
  private async deleteOne(req: IncomingMessage, res: ServerResponse, id: string): Promise<void> {
    if (!await readIgnoredBody(req, res, ROUTE_BODY_BYTES)) return
    await this.change(req, res, 200, (current) => {
      this.refuseConfigRoute(id, 'deleted')
      if (!current.some((r) => r.id === id)) {
        const missing = noSuchRoute(id)
        throw new Refusal(missing.status, missing.issues)
      }
      return current.filter((r) => r.id !== id)
    })
  }

  private refuseConfigRoute(id: string, what: string): void {
    if (this.gateway.config.routes.some((r) => r.id === id)) {
      throw new Refusal(409, [{ path: 'id', message: `${JSON.stringify(id)} is a config route; it can only be ${what} in the config file (then reload)` }])
    }
  }

  /**
   * One change, in turn with all others: the If-Match check, `next` (which computes the new
   * admin set from the current one, or throws a Refusal), then persist and swap.
   */
  private async change(
    req: IncomingMessage, res: ServerResponse, status: number | (() => number),
    next: (current: readonly RouteConfig[]) => RouteConfig[],
  ): Promise<void> {
    const ifMatch = req.headers['if-match']
    try {
      await this.serialize(async () => {
        const version = this.gateway.version
        if (ifMatch !== undefined && !matchesVersion(ifMatch, version)) {
          throw new Refusal(412, [{ path: 'If-Match', message: `the routes are at version ${version}, not ${ifMatch.trim()}; GET /routes and retry` }],
            { 'x-gateway-error': 'precondition_failed', etag: `"${version}"` })
        }
        const routes = next(this.gateway.adminManagedRoutes)
        await this.gateway.setAdminRoutes(routes)
      })
    } catch (err) {
      if (err instanceof Refusal) {
        sendErrors(res, err.status, err.errors, err.headers)
        return
      }
      sendErrors(res, 500, [{ path: '', message: `the change could not be saved: ${(err as Error).message}; nothing changed` }])
      return
    }
    this.sendList(res, typeof status === 'number' ? status : status())
  }
}

/**
 * `If-Match` against the routes version: `*`, or a list of entity tags where `"7"`, `W/"7"`
 * and a bare `7` all name version 7 (RFC 9110 13.1.1 wants quotes; scripts often drop them).
 */
function matchesVersion(header: string, version: number): boolean {
  return header.split(',').some((part) => {
    const tag = part.trim().replace(/^W\//, '').replace(/^"(.*)"$/, '$1')
    return tag === '*' || tag === String(version)
  })
}

/** `routes[3].targets[0]` -> `targets[0]` (`routes[3]["odd key"]` -> `["odd key"]`) for the route a single-route call is about. */
function relativeTo(issue: ConfigIssue, prefix: string): ConfigIssue {
  if (issue.path === prefix) return { path: '', message: issue.message }
  if (issue.path.startsWith(`${prefix}.`)) return { path: issue.path.slice(prefix.length + 1), message: issue.message }
  if (issue.path.startsWith(`${prefix}[`)) return { path: issue.path.slice(prefix.length), message: issue.message }
  return issue
}

/**
 * The answer for an id no route has: 400 when no route could have it (config/validate.ts's rule,
 * so the message is the schema's), else 404. Looked up first, so a route stored before the id
 * bounds existed can still be read and deleted. PUT checks its id with the rest of the route.
 */
function noSuchRoute(id: string): { status: number; issues: ConfigIssue[] } {
  const problems = validateRouteId(id, 'id')
  if (problems.length > 0) return { status: 400, issues: problems }
  return { status: 404, issues: [{ path: 'id', message: `no route with id ${show(id)}` }] }
}

function methodNotAllowed(res: ServerResponse, method: string, allow: string): void {
  sendErrors(res, 405, [{ path: 'method', message: `${method} is not allowed here; use ${allow}` }], { allow })
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}
