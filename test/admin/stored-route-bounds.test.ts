// The length bounds on route ids (128) and path prefixes (8192) are newer than some state files:
// admin routes an earlier release accepted and stored must still load, serve, and be read and
// deleted through the API. Only what a request writes now is held to the bounds.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { loadConfigFile } from '../../src/config/load.js'
import { Gateway } from '../../src/gateway.js'
import type { TestGateway } from '../helpers/gateway.js'
import { recordingUpstream } from '../helpers/recording-upstream.js'
import { useTestScope } from '../helpers/test-scope.js'
import { admin } from './admin-client.js'

const scope = useTestScope()
const LONG_ID = `workspace-${'x'.repeat(130)}`
const LONG_PREFIX = `/${'p'.repeat(8200)}`

/** A gateway started on a state file that holds `routes`, as an earlier release wrote it. */
async function startWithStoredRoutes(routes: unknown[]): Promise<TestGateway> {
  const up = await recordingUpstream()
  scope.defer(() => up.close())
  const dir = mkdtempSync(join(tmpdir(), 'gw-stored-routes-'))
  scope.defer(() => rmSync(dir, { recursive: true, force: true }))
  const stateFile = join(dir, 'state.json')
  writeFileSync(stateFile, JSON.stringify({ version: 1, servers: [], routes, routesVersion: 1 }))
  const configFile = join(dir, 'gateway.json')
  writeFileSync(configFile, JSON.stringify({
    listeners: [{ name: 'http', port: 0, host: '127.0.0.1' }],
    admin: { host: '127.0.0.1', port: 0, token: 'test-admin-token' },
    upstreams: { up: { targets: [up.target] } },
    routes: [{ id: 'all', pathPrefix: '/', upstream: 'up' }],
    stateFile,
  }))
  const gw = await Gateway.start(await loadConfigFile(configFile), { log: () => {} })
  scope.defer(() => gw.close())
  return { gw, dir, configFile, port: (name = 'http') => gw.addresses()[name].port, close: () => gw.close() }
}

describe('admin routes stored before the length bounds', () => {
  it('load, and stay through other changes and reloads; only new writes are held to the bounds', async () => {
    const g = await startWithStoredRoutes([
      { id: LONG_ID, pathPrefix: '/legacy', upstream: 'up' },
      { id: 'long-prefix', pathPrefix: LONG_PREFIX, upstream: 'up' },
    ])
    expect(g.gw.routes().routes.map((r) => r.id)).toEqual(['all', LONG_ID, 'long-prefix'])
    expect((await admin(g, 'GET', `/routes/${LONG_ID}`)).json.route).toMatchObject({ id: LONG_ID, pathPrefix: '/legacy' })
    // Another route added beside them, and a reload, leave them alone.
    expect((await admin(g, 'PUT', '/routes/api', { body: { pathPrefix: '/api', upstream: 'up' } })).status).toBe(201)
    expect((await admin(g, 'POST', '/reload')).status).toBe(200)
    // Written again, a long id is refused like any new one.
    const rewrite = await admin(g, 'PUT', '/routes', { body: { routes: [{ id: LONG_ID, pathPrefix: '/legacy', upstream: 'up' }] } })
    expect(rewrite.status).toBe(400)
    expect(rewrite.json.errors).toEqual([{ path: 'routes[0].id', message: expect.stringContaining('at most 128 characters') }])
    const prefix = await admin(g, 'PUT', '/routes/long-prefix', { body: { pathPrefix: LONG_PREFIX, upstream: 'up' } })
    expect(prefix.status).toBe(400)
    expect(prefix.json.errors).toEqual([{ path: 'pathPrefix', message: expect.stringContaining('at most 8192 characters') }])
    // And they can be deleted.
    expect((await admin(g, 'DELETE', `/routes/${LONG_ID}`)).status).toBe(200)
    expect((await admin(g, 'DELETE', '/routes/long-prefix')).status).toBe(200)
    expect(g.gw.routes().routes.map((r) => r.id)).toEqual(['all', 'api'])
    // An id no route has, and none could have: 400, not 404.
    expect((await admin(g, 'GET', `/routes/${LONG_ID}`)).status).toBe(400)
    expect((await admin(g, 'DELETE', `/routes/${LONG_ID}`)).status).toBe(400)
    expect((await admin(g, 'GET', '/routes/nope')).status).toBe(404)
  })
})
