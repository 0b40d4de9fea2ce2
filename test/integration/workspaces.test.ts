// Workspace routes end to end: both URL shapes, never an open proxy, teardown reaching open
// tunnels and pooled connections, cookie hygiene, and a remote registry that fails.

import { once } from 'node:events'
import type http from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import WebSocket, { WebSocketServer } from 'ws'
import { FakeRegistry, waitFor } from '../helpers/fake-registry.js'
import { startGateway, type TestGateway } from '../helpers/gateway.js'
import { httpUpstream, rawExchange, type TestServer } from '../helpers/upstream.js'

const cleanups: (() => Promise<unknown> | void)[] = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

async function upstream(handler: http.RequestListener = (req, res) => res.end(JSON.stringify({ url: req.url, cookie: req.headers.cookie ?? null }))): Promise<TestServer<http.Server>> {
  const up = await httpUpstream(handler)
  cleanups.push(() => up.close())
  return up
}

async function gateway(config: Record<string, unknown> = {}): Promise<TestGateway> {
  const master = await upstream((req, res) => res.end(JSON.stringify({ master: true, url: req.url, cookie: req.headers.cookie ?? null })))
  const gw = await startGateway({
    listeners: [{ name: 'http', port: 0, host: '127.0.0.1' }, { name: 'agents', port: 0, host: '127.0.0.1', workspacesOnly: true }],
    upstreams: { master: { targets: [master.target] } },
    routes: [{ id: 'master', pathPrefix: '/', upstream: 'master' }],
    workspaces: { hostSuffix: '.ws.example.com' },
    ...config,
  })
  cleanups.push(() => gw.close())
  return gw
}

async function wsEcho(): Promise<{ port: number; target: string; closed: Promise<unknown>[] }> {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' })
  await once(wss, 'listening')
  const closed: Promise<unknown>[] = []
  wss.on('connection', (ws) => {
    closed.push(once(ws, 'close'))
    ws.on('message', (m, binary) => ws.send(m, { binary }))
  })
  cleanups.push(() => new Promise((r) => { for (const c of wss.clients) c.terminate(); wss.close(r) }))
  const port = (wss.address() as AddressInfo).port
  return { port, target: `127.0.0.1:${port}`, closed }
}

async function openWs(url: string): Promise<WebSocket> {
  const ws = new WebSocket(url)
  cleanups.push(() => ws.terminate())
  await once(ws, 'open')
  ws.on('error', () => {})
  return ws
}

async function echo(ws: WebSocket, text: string): Promise<string> {
  ws.send(text)
  const [data] = await once(ws, 'message')
  return String(data)
}

describe('workspace routes (embedded registry)', () => {
  it('sends /{port}_{host}/... to the registry target with path and query unchanged', async () => {
    const agent = await upstream()
    const gw = await gateway()
    await gw.gw.registry!.put({ key: '32770_node1.example.com', target: agent.target, workspaceId: 'w1', server: 'wsagent' })
    const res = await fetch(`http://127.0.0.1:${gw.port()}/32770_node1.example.com/api/project?token=abc`)
    expect(res.status).toBe(200)
    expect(await res.json()).toMatchObject({ url: '/32770_node1.example.com/api/project?token=abc' })
  })

  it('answers an unknown workspace server 404 without connecting anywhere', async () => {
    const agent = await upstream()
    const gw = await gateway()
    const res = await fetch(`http://127.0.0.1:${gw.port()}/${agent.port}_127.0.0.1/api`)
    expect(res.status).toBe(404)
    expect(res.headers.get('x-gateway-error')).toBe('unknown_workspace_server')
    expect(agent.connections).toBe(0)
  })

  it('never sends a workspace request to a link-local or metadata address, and refuses to store one', async () => {
    const gw = await gateway()
    await gw.gw.registry!.put({ key: '80_metadata', target: '169.254.169.254:80' })
    const res = await fetch(`http://127.0.0.1:${gw.port()}/80_metadata/latest/meta-data/`)
    expect(res.status).toBe(404)
    expect(res.headers.get('x-gateway-error')).toBe('unknown_workspace_server')
    const admin = gw.gw.addresses().admin.port
    const put = await fetch(`http://127.0.0.1:${admin}/servers/80_meta2`, {
      method: 'PUT', headers: { authorization: 'Bearer test-admin-token' }, body: JSON.stringify({ target: '[::ffff:a9fe:a9fe]:80' }),
    })
    expect(put.status).toBe(400)
    expect(((await put.json()) as { errors: { path: string }[] }).errors[0].path).toBe('target')
  })

  it('routes a host name under hostSuffix by the full host name', async () => {
    const agent = await upstream()
    const gw = await gateway()
    await gw.gw.registry!.put({ key: 'terminal-dev-w42.ws.example.com', target: agent.target })
    const out = await rawExchange(gw.port(), 'GET /pty?token=t HTTP/1.1\r\nHost: Terminal-Dev-W42.ws.example.com\r\nConnection: close\r\n\r\n')
    expect(out).toMatch(/^HTTP\/1\.1 200/)
    expect(out).toContain('"url":"/pty?token=t"')
    const miss = await rawExchange(gw.port(), 'GET / HTTP/1.1\r\nHost: other.ws.example.com\r\nConnection: close\r\n\r\n')
    expect(miss).toContain('x-gateway-error: unknown_workspace_server')
  })

  it('serves only workspace requests on a workspacesOnly listener', async () => {
    const agent = await upstream()
    const gw = await gateway()
    await gw.gw.registry!.put({ key: '32770_node1', target: agent.target })
    const master = await fetch(`http://127.0.0.1:${gw.port('agents')}/dashboard`)
    expect(master.status).toBe(404)
    expect(master.headers.get('x-gateway-error')).toBe('no_route')
    const ws = await fetch(`http://127.0.0.1:${gw.port('agents')}/32770_node1/api`)
    expect(ws.status).toBe(200)
  })

  it('strips the master cookies from workspace requests only', async () => {
    const agent = await upstream()
    const gw = await gateway()
    await gw.gw.registry!.put({ key: '32770_node1', target: agent.target })
    const cookie = 'session-access-key=s; theme=dark; IDESESSIONID=x'
    const toAgent = await (await fetch(`http://127.0.0.1:${gw.port()}/32770_node1/api`, { headers: { cookie } })).json()
    expect(toAgent.cookie).toBe('theme=dark')
    const toMaster = await (await fetch(`http://127.0.0.1:${gw.port()}/dashboard`, { headers: { cookie } })).json()
    expect(toMaster.cookie).toBe(cookie)
  })

  it('tunnels a websocket on a workspace route and closes it when the server is deleted', async () => {
    const agent = await wsEcho()
    const gw = await gateway()
    await gw.gw.registry!.put({ key: `${agent.port}_node1`, target: agent.target })
    const ws = await openWs(`ws://127.0.0.1:${gw.port()}/${agent.port}_node1/pty?token=t`)
    expect(await echo(ws, 'ls\n')).toBe('ls\n')
    const closedAt = Date.now()
    await gw.gw.registry!.delete(`${agent.port}_node1`)
    await once(ws, 'close')
    expect(Date.now() - closedAt).toBeLessThan(1000)
    await Promise.all(agent.closed)
    const res = await fetch(`http://127.0.0.1:${gw.port()}/${agent.port}_node1/api`)
    expect(res.headers.get('x-gateway-error')).toBe('unknown_workspace_server')
  })

  it('closes tunnels when a server moves to another target, and only then', async () => {
    const agent = await wsEcho()
    const other = await wsEcho()
    const gw = await gateway()
    const key = `${agent.port}_node1`
    await gw.gw.registry!.put({ key, target: agent.target, workspaceId: 'w1' })
    const ws = await openWs(`ws://127.0.0.1:${gw.port()}/${key}/pty`)
    // Same target, other metadata, and an unrelated route change: the tunnel stays.
    await gw.gw.registry!.put({ key, target: agent.target, workspaceId: 'w1', server: 'terminal' })
    await gw.gw.setAdminRoutes([{ id: 'extra', pathPrefix: '/extra', targets: [other.target] }])
    expect(await echo(ws, 'still here')).toBe('still here')
    await gw.gw.registry!.put({ key, target: other.target })
    await once(ws, 'close')
  })

  it('closes pooled connections to a deleted server', async () => {
    const agent = await upstream()
    const gw = await gateway()
    await gw.gw.registry!.put({ key: '32770_node1', target: agent.target })
    await (await fetch(`http://127.0.0.1:${gw.port()}/32770_node1/api`)).text()
    await waitFor(() => gw.gw.targets.peek(agent.target)?.idleCount === 1, 2000, 'a pooled connection')
    await gw.gw.registry!.delete('32770_node1')
    await waitFor(() => (gw.gw.targets.peek(agent.target)?.idleCount ?? 0) === 0, 1000, 'the pool to empty')
  })
})

describe('workspace routes (remote registry)', () => {
  async function remote(): Promise<{ fake: FakeRegistry; gw: TestGateway }> {
    const fake = await FakeRegistry.start()
    cleanups.push(() => fake.close())
    const gw = await gateway({ workspaces: { hostSuffix: '.ws.example.com', registry: { url: fake.url, token: 'reg-token', cacheTtlMs: 30000, negativeTtlMs: 2000, staleIfErrorMs: 600000, cacheSize: 1000 } } })
    return { fake, gw }
  }

  it('resolves through the master registry and caches the answer', async () => {
    const agent = await upstream()
    const { fake, gw } = await remote()
    fake.setSilently({ key: '32770_node1', target: agent.target })
    const results = await Promise.all(Array.from({ length: 20 }, () => fetch(`http://127.0.0.1:${gw.port()}/32770_node1/api`).then((r) => r.status)))
    expect(results.every((s) => s === 200)).toBe(true)
    expect(fake.lookupCount('32770_node1')).toBe(1)
    expect(fake.authorizations).toContain('Bearer reg-token')
  })

  it('turns the next request into 404 and closes tunnels when a delete event arrives', async () => {
    const agent = await wsEcho()
    const { fake, gw } = await remote()
    const key = `${agent.port}_node1`
    fake.setSilently({ key, target: agent.target })
    await waitFor(() => fake.openStreams > 0, 3000, 'the event stream')
    const ws = await openWs(`ws://127.0.0.1:${gw.port()}/${key}/pty`)
    expect(await echo(ws, 'x')).toBe('x')
    fake.delete(key)
    await once(ws, 'close')
    await waitFor(async () => (await fetch(`http://127.0.0.1:${gw.port()}/${key}/api`)).status === 404, 2000, '404 after delete')
  })

  it('serves cached entries while the registry is down and answers misses 503', async () => {
    const agent = await upstream()
    const { fake, gw } = await remote()
    fake.setSilently({ key: '32770_node1', target: agent.target })
    expect((await fetch(`http://127.0.0.1:${gw.port()}/32770_node1/api`)).status).toBe(200)
    await fake.down()
    expect((await fetch(`http://127.0.0.1:${gw.port()}/32770_node1/api`)).status).toBe(200)
    const miss = await fetch(`http://127.0.0.1:${gw.port()}/32771_node1/api`)
    expect(miss.status).toBe(503)
    expect(miss.headers.get('x-gateway-error')).toBe('registry_unavailable')
    await fake.up()
    fake.setSilently({ key: '32771_node1', target: agent.target })
    await waitFor(async () => (await fetch(`http://127.0.0.1:${gw.port()}/32771_node1/api`)).status === 200, 5000, 'recovery')
  })

  it('reports not ready until the event stream connects', async () => {
    const fake = await FakeRegistry.start()
    cleanups.push(() => fake.close())
    await fake.down()
    const gw = await gateway({ workspaces: { registry: { url: fake.url } } })
    const admin = gw.gw.addresses().admin.port
    expect((await fetch(`http://127.0.0.1:${admin}/readyz`)).status).toBe(503)
    await fake.up()
    await waitFor(async () => (await fetch(`http://127.0.0.1:${admin}/readyz`)).status === 200, 15000, 'ready')
  })
})
