// The events that matter reach the gatewayEvent diagnostics channel (which the event log
// and the metrics subscribe to): a target marked down and up, a limit hit, a reload (good
// and bad), and a change of the admin routes; and each becomes a log line and a metric.

import diagnosticsChannel from 'node:diagnostics_channel'
import { once } from 'node:events'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import http from 'node:http'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { loadConfigFile } from '../../src/config/load.js'
import { Gateway } from '../../src/gateway.js'
import { gatewayEvent } from '../../src/observability/channels.js'
import { waitFor } from '../helpers/fake-registry.js'
import { request } from '../helpers/fault-scene.js'
import { startGateway, type TestGateway } from '../helpers/gateway.js'
import { httpUpstream, rawClient, freePort } from '../helpers/upstream.js'

type GatewayEventMessage = { event: string } & Record<string, unknown>

const cleanups: (() => Promise<unknown> | void)[] = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

/** Everything published on the channel from now until the end of the test. */
function recordEvents(): GatewayEventMessage[] {
  const seen: GatewayEventMessage[] = []
  const onMessage = (m: unknown): void => {
    seen.push(m as GatewayEventMessage)
  }
  diagnosticsChannel.subscribe(gatewayEvent.name, onMessage)
  cleanups.push(() => {
    diagnosticsChannel.unsubscribe(gatewayEvent.name, onMessage)
  })
  return seen
}

async function gateway(config: Record<string, unknown>): Promise<TestGateway> {
  const gw = await startGateway(config)
  cleanups.push(() => gw.close())
  return gw
}

async function app() {
  const up = await httpUpstream((_req, res) => res.end('ok'))
  cleanups.push(() => up.close())
  return up
}

describe('operational events', () => {
  it('publishes upstream_down when a target is taken out and upstream_up when it comes back', async () => {
    const events = recordEvents()
    const port = await freePort()
    const target = `127.0.0.1:${port}`
    const gw = await gateway({ upstreams: { app: { targets: [target], maxFails: 1, cooldownMs: 300 } }, routes: [{ id: 'app', pathPrefix: '/', upstream: 'app' }] })
    expect((await request(gw.port(), '/')).code).toBe('upstream_unreachable')
    expect(events.filter((e) => e.event === 'upstream_down')).toEqual([expect.objectContaining({ event: 'upstream_down', target })])
    const revived = http.createServer((_req, res) => res.end('back')).listen(port, '127.0.0.1')
    cleanups.push(() => new Promise((r) => revived.close(r)))
    await once(revived, 'listening')
    await waitFor(async () => (await request(gw.port(), '/')).text === 'back', 3000, 'the target back in rotation')
    expect(events.filter((e) => e.event === 'upstream_up')).toEqual([{ event: 'upstream_up', target }])
  })

  it('publishes limit_hit when maxConnections turns a connection away', async () => {
    const up = await app()
    const gw = await gateway({ upstreams: { app: { targets: [up.target] } }, routes: [{ id: 'app', pathPrefix: '/', upstream: 'app' }], limits: { maxConnections: 1 } })
    const events = recordEvents()
    const holder = rawClient(gw.port())
    cleanups.push(() => { holder.socket.destroy() })
    await once(holder.socket, 'connect')
    await waitFor(() => gw.gw.engine.connections.size === 1, 2000, 'the first connection')
    expect((await request(gw.port(), '/')).code).toBe('over_capacity')
    expect(events).toContainEqual(expect.objectContaining({ event: 'limit_hit', limit: 'maxConnections', listener: 'http' }))
  })

  it('publishes reload with ok: true after a good config edit and ok: false with the errors after a bad one', async () => {
    const up = await app()
    const gw = await gateway({ upstreams: { app: { targets: [up.target] } }, routes: [{ id: 'app', pathPrefix: '/', upstream: 'app' }] })
    const events = recordEvents()
    const config = JSON.parse(readFileSync(gw.configFile, 'utf8')) as { routes: unknown[] }
    config.routes.unshift({ id: 'extra', pathPrefix: '/extra', upstream: 'app' })
    writeFileSync(gw.configFile, JSON.stringify(config))
    expect((await gw.gw.reload()).ok).toBe(true)
    expect(events).toContainEqual(expect.objectContaining({ event: 'reload', ok: true }))

    config.routes.unshift({ id: 'broken', pathPrefix: '/broken', upstream: 'nowhere' })
    writeFileSync(gw.configFile, JSON.stringify(config))
    const bad = await gw.gw.reload()
    expect(bad.ok).toBe(false)
    const failed = events.find((e) => e.event === 'reload' && e.ok === false)
    expect(failed).toBeDefined()
    expect(failed!.errors).toEqual(bad.errors)
    expect((bad.errors ?? []).length).toBeGreaterThan(0)
  })

  it('publishes routes_changed with the new version when the admin routes change', async () => {
    const up = await app()
    const gw = await gateway({ upstreams: { app: { targets: [up.target] } }, routes: [{ id: 'app', pathPrefix: '/', upstream: 'app' }] })
    const events = recordEvents()
    const version = await gw.gw.setAdminRoutes([{ id: 'extra', pathPrefix: '/extra', upstream: 'app' }])
    expect(events).toContainEqual(expect.objectContaining({ event: 'routes_changed', version, adminRoutes: 1 }))
  })
})

describe('operational events seen by an operator', () => {
  it('turns a target down and up, a limit hit, a reload and a route change into log lines and gateway_events_total', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gw-events-'))
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }))
    const port = await freePort()
    const target = `127.0.0.1:${port}`
    const configFile = join(dir, 'gateway.json')
    const config = {
      listeners: [{ name: 'http', port: 0, host: '127.0.0.1' }],
      admin: { host: '127.0.0.1', port: 0, token: 'test-admin-token' },
      stateFile: join(dir, 'state.json'),
      upstreams: { app: { targets: [target], maxFails: 1, cooldownMs: 300 } },
      routes: [{ id: 'app', pathPrefix: '/', upstream: 'app' }],
      limits: { maxConnections: 1 },
    }
    writeFileSync(configFile, JSON.stringify(config))
    const lines: { message: string; fields?: Record<string, unknown> }[] = []
    const gw = await Gateway.start(await loadConfigFile(configFile), { log: (message: string, fields?: Record<string, unknown>) => { lines.push({ message, fields }) } })
    cleanups.push(() => gw.close())
    const front = gw.addresses().http.port

    expect((await request(front, '/')).code).toBe('upstream_unreachable') // upstream_down
    const revived = http.createServer((_req, res) => res.end('back')).listen(port, '127.0.0.1')
    cleanups.push(() => new Promise((r) => revived.close(r)))
    await once(revived, 'listening')
    await waitFor(async () => (await request(front, '/')).text === 'back', 3000, 'the target back') // upstream_up
    await waitFor(() => gw.engine.connections.size === 0, 2000, 'no connection open')
    const holder = rawClient(front)
    cleanups.push(() => { holder.socket.destroy() })
    await once(holder.socket, 'connect')
    await waitFor(() => gw.engine.connections.size === 1, 2000, 'the one allowed connection')
    expect((await request(front, '/')).code).toBe('over_capacity') // limit_hit
    holder.socket.destroy()
    writeFileSync(configFile, JSON.stringify({ ...config, limits: { maxConnections: 100 } }))
    expect((await gw.reload()).ok).toBe(true) // reload
    await gw.setAdminRoutes([{ id: 'extra', pathPrefix: '/extra', upstream: 'app' }]) // routes_changed

    const names = ['upstream_down', 'upstream_up', 'limit_hit', 'reload', 'routes_changed']
    for (const name of names) {
      const line = lines.find((l) => l.message === name)
      expect(line, `a log line for ${name}; got ${JSON.stringify(lines.map((l) => l.message))}`).toBeDefined()
      expect(line!.fields).toMatchObject({ event: name })
    }
    expect(lines.find((l) => l.message === 'upstream_down')!.fields).toMatchObject({ target, level: 'warn' })
    const res = await fetch(`http://127.0.0.1:${gw.addresses().admin.port}/metrics`, { headers: { authorization: 'Bearer test-admin-token' } })
    expect(res.status).toBe(200)
    const metrics = await res.text()
    for (const name of names) expect(metrics).toMatch(new RegExp(`^gateway_events_total\\{event="${name}"\\} [1-9]`, 'm'))
    expect(metrics).toMatch(/^gateway_limit_hits_total\{limit="maxConnections"\} [1-9]/m)
    expect(metrics).toMatch(/^gateway_reloads_total\{result="ok"\} 1$/m)
  })
})
