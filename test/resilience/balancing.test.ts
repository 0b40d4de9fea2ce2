// Several targets per upstream: balancing, passive and active health, retries after connect
// failures, the maintenance page, and connection limits.

import { once } from 'node:events'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import http from 'node:http'
import net from 'node:net'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { waitFor } from '../helpers/fake-registry.js'
import { startGateway, type TestGateway } from '../helpers/gateway.js'
import { httpUpstream, rawClient, type TestServer, freePort } from '../helpers/upstream.js'

const cleanups: (() => Promise<unknown> | void)[] = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

async function named(name: string, handler?: http.RequestListener): Promise<TestServer<http.Server>> {
  const up = await httpUpstream(handler ?? ((req, res) => {
    let body = ''
    req.on('data', (d) => (body += d))
    req.on('end', () => res.end(JSON.stringify({ name, body })))
  }))
  cleanups.push(() => up.close())
  return up
}

async function gateway(upstream: Record<string, unknown>, extra: Record<string, unknown> = {}): Promise<TestGateway> {
  const gw = await startGateway({ upstreams: { app: upstream }, routes: [{ id: 'app', pathPrefix: '/', upstream: 'app' }], ...extra })
  cleanups.push(() => gw.close())
  return gw
}

const get = async (gw: TestGateway, path = '/', headers: Record<string, string> = {}) => {
  const res = await fetch(`http://127.0.0.1:${gw.port()}${path}`, { headers })
  return { status: res.status, code: res.headers.get('x-gateway-error'), type: res.headers.get('content-type'), text: await res.text() }
}

describe('load balancing and health', () => {
  it('spreads requests round-robin over the targets', async () => {
    const a = await named('a')
    const b = await named('b')
    const gw = await gateway({ targets: [a.target, b.target] })
    const names: string[] = []
    for (let i = 0; i < 10; i++) names.push(JSON.parse((await get(gw)).text).name)
    expect(names.filter((n) => n === 'a')).toHaveLength(5)
    expect(names.filter((n) => n === 'b')).toHaveLength(5)
  })

  it('sends a request to the least busy target with least-connections', async () => {
    let release: (() => void) | null = null
    const slow = await named('slow', (_req, res) => { release = () => res.end(JSON.stringify({ name: 'slow' })) })
    const fast = await named('fast')
    const gw = await gateway({ targets: [slow.target, fast.target], balance: 'least-connections' })
    // Occupy whichever target the first request lands on, until it is the slow one.
    const held: Promise<unknown>[] = []
    for (let i = 0; i < 2 && release === null; i++) held.push(get(gw))
    await waitFor(() => release !== null, 2000, 'a held request')
    for (let i = 0; i < 5; i++) expect(JSON.parse((await get(gw)).text).name).toBe('fast')
    release!()
    await Promise.all(held)
  })

  it('retries a connect failure on another target and takes the dead one out of rotation', async () => {
    const dead = await freePort()
    const b = await named('b')
    const gw = await gateway({ targets: [`127.0.0.1:${dead}`, b.target], maxFails: 2, cooldownMs: 60000 })
    for (let i = 0; i < 6; i++) {
      const r = await get(gw)
      expect(r.status).toBe(200)
      expect(JSON.parse(r.text).name).toBe('b')
    }
    expect(gw.gw.targets.peek(`127.0.0.1:${dead}`)!.healthy).toBe(false)
  })

  it('retries a POST whose body came whole on another target', async () => {
    const dead = await freePort()
    const b = await named('b')
    const gw = await gateway({ targets: [`127.0.0.1:${dead}`, b.target] })
    for (let i = 0; i < 2; i++) {
      const res = await fetch(`http://127.0.0.1:${gw.port()}/upload`, { method: 'POST', body: 'payload' })
      expect(await res.json()).toEqual({ name: 'b', body: 'payload' })
    }
  })

  it('brings a target back with one trial request after its cool-down', async () => {
    const port = await freePort()
    const gw = await gateway({ targets: [`127.0.0.1:${port}`], maxFails: 1, cooldownMs: 300 })
    expect((await get(gw)).code).toBe('upstream_unreachable')
    expect((await get(gw)).code).toBe('no_healthy_upstream')
    const revived = http.createServer((_req, res) => res.end('back')).listen(port, '127.0.0.1')
    cleanups.push(() => new Promise((r) => revived.close(r)))
    await once(revived, 'listening')
    await waitFor(async () => (await get(gw)).text === 'back', 3000, 'the trial request')
    expect(gw.gw.targets.peek(`127.0.0.1:${port}`)!.healthy).toBe(true)
  })

  it('answers 503 no_healthy_upstream when every target is out', async () => {
    const gw = await gateway({ targets: [`127.0.0.1:${await freePort()}`, `127.0.0.1:${await freePort()}`], maxFails: 1, cooldownMs: 60000 })
    expect((await get(gw)).code).toBe('upstream_unreachable')
    const r = await get(gw)
    expect(r.status).toBe(503)
    expect(r.code).toBe('no_healthy_upstream')
  })

  it('takes a target out on failed active checks and back when they pass', async () => {
    let healthy = true
    const a = await named('a', (req, res) => {
      if (req.url === '/health') { res.statusCode = healthy ? 200 : 500; res.end(); return }
      res.end(JSON.stringify({ name: 'a' }))
    })
    const b = await named('b')
    const gw = await gateway({ targets: [a.target, b.target], maxFails: 1, cooldownMs: 60000, healthCheck: { path: '/health', intervalMs: 100, timeoutMs: 500 } })
    const target = gw.gw.targets.peek(a.target)!
    healthy = false
    await waitFor(() => !target.healthy, 2000, 'a marked down')
    for (let i = 0; i < 4; i++) expect(JSON.parse((await get(gw)).text).name).toBe('b')
    healthy = true
    await waitFor(() => target.healthy, 2000, 'a marked up')
  })
})

describe('maintenance page', () => {
  it('serves the HTML page to browsers and JSON to API clients while the master is down', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gw-page-'))
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }))
    const page = join(dir, 'maintenance.html')
    writeFileSync(page, '<html><body>Back soon ☕</body></html>')
    const gw = await gateway({ targets: [`127.0.0.1:${await freePort()}`], errorPage: page })
    const browser = await get(gw, '/dashboard', { accept: 'text/html,application/xhtml+xml' })
    expect(browser.status).toBe(503)
    expect(browser.type).toContain('text/html')
    expect(browser.text).toContain('Back soon ☕')
    expect(browser.code).toBe('upstream_unreachable')
    const api = await get(gw, '/api/workspace', { accept: 'application/json' })
    expect(api.type).toBe('application/json')
    expect(JSON.parse(api.text)).toMatchObject({ error: api.code })
  })
})

describe('connection limits', () => {
  it('answers 503 over_capacity past maxConnections while the admin and open connections keep working', async () => {
    const a = await named('a')
    const gw = await gateway({ targets: [a.target] }, { limits: { maxConnections: 2 } })
    const c1 = rawClient(gw.port())
    const c2 = rawClient(gw.port())
    cleanups.push(() => { c1.socket.destroy(); c2.socket.destroy() })
    await Promise.all([once(c1.socket, 'connect'), once(c2.socket, 'connect')])
    await waitFor(() => gw.gw.engine.connections.size === 2, 2000, 'two connections')
    const third = await get(gw)
    expect(third.status).toBe(503)
    expect(third.code).toBe('over_capacity')
    expect((await fetch(`http://127.0.0.1:${gw.gw.addresses().admin.port}/healthz`)).status).toBe(200)
    c1.socket.write('GET / HTTP/1.1\r\nHost: h\r\n\r\n')
    await c1.waitFor('"name":"a"')
    c2.socket.destroy()
    await waitFor(() => gw.gw.engine.connections.size === 1, 2000, 'a freed slot')
    expect((await get(gw)).status).toBe(200)
  })

  it('caps connections per client address when configured', async () => {
    const a = await named('a')
    const gw = await gateway({ targets: [a.target] }, { limits: { maxConnectionsPerClient: 1 } })
    const c1 = rawClient(gw.port())
    cleanups.push(() => { c1.socket.destroy() })
    await once(c1.socket, 'connect')
    await waitFor(() => gw.gw.engine.connections.size === 1, 2000, 'one connection')
    const second = await get(gw)
    expect(second.code).toBe('over_capacity')
  })
})
