import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { createServer, request } from 'node:http'
import type { Server } from 'node:http'
import type { Socket } from 'node:net'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { EmbeddedRegistry } from '../../src/registry/embedded-registry.js'
import type { EmbeddedRegistryOptions } from '../../src/registry/embedded-registry.js'
import { RegistryClient } from '../../src/registry/registry-client.js'
import type { RegistryEvent } from '../../src/registry/registry-source.js'
import { RouteCache } from '../../src/routing/route-cache.js'
import { waitFor } from '../helpers/fake-registry.js'

const node1 = { key: '32770_node1', target: 'node1:32770', workspaceId: 'w1', server: 'wsagent' }

let dir: string
let registry: EmbeddedRegistry | undefined
let server: Server | undefined
let sockets: Set<Socket>
let base: string
let client: RegistryClient | undefined
let cache: RouteCache | undefined

async function setup(options: EmbeddedRegistryOptions = {}, initial?: unknown): Promise<EmbeddedRegistry> {
  const file = join(dir, 'registry.json')
  if (initial !== undefined) await writeFile(file, JSON.stringify(initial))
  const reg = await EmbeddedRegistry.open(file, options)
  registry = reg
  sockets = new Set()
  server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x')
    if (!reg.handleRegistryRequest(req, res, url.pathname, url.searchParams)) {
      res.writeHead(418).end()
    }
  })
  server.on('connection', (s) => {
    sockets.add(s)
    s.on('close', () => sockets.delete(s))
  })
  await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve))
  const address = server.address() as { port: number }
  base = `http://127.0.0.1:${address.port}`
  return reg
}

interface Answer { status: number; headers: Record<string, string | string[] | undefined>; body: string }

function call(method: string, path: string, body?: string, headers: Record<string, string> = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(`${base}${path}`, { method, headers, agent: false }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => { text += c })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end(body)
  })
}

/** Opens an event stream and collects its raw text. */
function openStream(path: string): Promise<{ text: () => string; close: () => void; status: number }> {
  return new Promise((resolve, reject) => {
    let text = ''
    const req = request(`${base}${path}`, { agent: false }, (res) => {
      res.setEncoding('utf8')
      res.on('data', (c: string) => { text += c })
      res.on('error', () => {})
      resolve({ text: () => text, close: () => req.destroy(), status: res.statusCode ?? 0 })
    })
    req.on('error', reject)
    req.end()
  })
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'embedded-registry-'))
})

afterEach(async () => {
  cache?.close()
  cache = undefined
  await client?.close()
  client = undefined
  registry?.close()
  await registry?.store.idle()
  registry = undefined
  if (server !== undefined) {
    const closed = new Promise((resolve) => server!.close(resolve))
    for (const s of sockets) s.destroy()
    await closed
    server = undefined
  }
  await rm(dir, { recursive: true, force: true })
})

describe('EmbeddedRegistry over HTTP', () => {
  it('PUT stores an entry (key from the URL), GET returns it, the list and the state file have it', async () => {
    await setup()
    const { key: _key, ...withoutKey } = node1
    const put = await call('PUT', '/servers/32770_node1', JSON.stringify(withoutKey))
    expect(put.status).toBe(200)
    expect(JSON.parse(put.body)).toEqual(node1)
    expect(JSON.parse((await call('GET', '/servers/32770_node1')).body)).toEqual(node1)
    expect(JSON.parse((await call('GET', '/servers')).body)).toEqual({ version: 1, servers: [node1] })
    expect(JSON.parse(await readFile(join(dir, 'registry.json'), 'utf8')).servers).toEqual([node1])
  })

  it('GET and DELETE of an unknown key are 404', async () => {
    await setup()
    expect((await call('GET', '/servers/nope')).status).toBe(404)
    expect((await call('DELETE', '/servers/nope')).status).toBe(404)
  })

  it('DELETE removes the entry and persists it', async () => {
    await setup({}, { version: 3, servers: [node1] })
    expect((await call('DELETE', '/servers/32770_node1')).status).toBe(200)
    expect((await call('GET', '/servers/32770_node1')).status).toBe(404)
    expect(JSON.parse(await readFile(join(dir, 'registry.json'), 'utf8'))).toEqual({ version: 4, servers: [] })
  })

  it('answers 400 with JSON paths for invalid bodies', async () => {
    await setup()
    let res = await call('PUT', '/servers/k', '{"target": "nope", "server": 1}')
    expect(res.status).toBe(400)
    expect(JSON.parse(res.body).errors.map((e: { path: string }) => e.path)).toEqual(['target', 'server'])
    res = await call('PUT', '/servers/k', '{bad json')
    expect(res.status).toBe(400)
    expect(JSON.parse(res.body).errors[0].path).toBe('$')
    res = await call('PUT', '/servers/k', JSON.stringify({ ...node1 }))
    expect(res.status).toBe(400)
    expect(JSON.parse(res.body).errors[0].path).toBe('key')
    res = await call('PUT', '/servers/%E0%A4%A', '{}')
    expect(res.status).toBe(400)
    expect((await call('GET', '/servers')).body).toContain('"servers":[]')
  })

  it('refuses a body over 64 KiB with 413', async () => {
    await setup()
    const res = await call('PUT', '/servers/k', JSON.stringify({ target: 'n:1', pad: 'x'.repeat(70 * 1024) }))
    expect(res.status).toBe(413)
  })

  it('answers 405 for other methods and leaves other paths to the caller', async () => {
    await setup()
    expect((await call('POST', '/servers')).status).toBe(405)
    expect((await call('POST', '/servers/k')).status).toBe(405)
    expect((await call('GET', '/routes')).status).toBe(418)
    expect((await call('GET', '/servers/a/b')).status).toBe(418)
  })

  it('keeps the admin routes section of the state file', async () => {
    const routes = [{ id: 'r', pathPrefix: '/r', targets: ['127.0.0.1:1'] }]
    await setup({}, { version: 2, servers: [], routes })
    await call('PUT', '/servers/32770_node1', JSON.stringify(node1))
    expect(JSON.parse(await readFile(join(dir, 'registry.json'), 'utf8')).routes).toEqual(routes)
  })

  it('refuses to start on a corrupt state file, naming it', async () => {
    await writeFile(join(dir, 'registry.json'), 'garbage')
    await expect(EmbeddedRegistry.open(join(dir, 'registry.json'))).rejects.toThrow(join(dir, 'registry.json'))
    expect(await readFile(join(dir, 'registry.json'), 'utf8')).toBe('garbage')
  })

  it('streams events after since, live ones, and keepalives', async () => {
    const reg = await setup({ keepaliveMs: 20 })
    await reg.put(node1)
    await reg.put({ key: 'k2', target: 'node2:1' })
    const stream = await openStream('/events?since=1')
    expect(stream.status).toBe(200)
    await waitFor(() => stream.text().includes('id: 2\n'), 3000, 'backlog')
    expect(stream.text()).not.toContain('id: 1\n')
    await reg.delete('32770_node1')
    await waitFor(() => stream.text().includes('id: 3\ndata: {"op":"delete","key":"32770_node1"'), 3000, 'live event')
    await waitFor(() => stream.text().includes(': keepalive\n\n'), 3000, 'keepalive')
    stream.close()
  })

  it('sends event: reset when since is older than the ring or from the future', async () => {
    const reg = await setup({ ringSize: 2 })
    for (let i = 0; i < 4; i++) await reg.put({ key: `k${i}`, target: `node1:${i + 1}` })
    const old = await openStream('/events?since=1')
    await waitFor(() => old.text().includes('event: reset\nid: 4\n'), 3000, 'reset for old since')
    old.close()
    const inRing = await openStream('/events?since=2')
    await waitFor(() => inRing.text().includes('id: 4\n'), 3000, 'ring events')
    expect(inRing.text()).not.toContain('reset')
    inRing.close()
    const future = await openStream('/events?since=99')
    await waitFor(() => future.text().includes('event: reset'), 3000, 'reset for future since')
    future.close()
    expect((await call('GET', '/events?since=abc')).status).toBe(400)
  })

  it('forgets a stream when its client goes', async () => {
    await setup()
    const stream = await openStream('/events')
    await waitFor(() => sockets.size === 1, 3000, 'connected')
    stream.close()
    await waitFor(() => sockets.size === 0, 3000, 'socket closed')
    await registry!.put(node1) // writing to a gone stream would throw
  })
})

describe('one gateway feeding another', () => {
  it('a remote client and route cache follow the embedded registry over its protocol', async () => {
    const reg = await setup()
    await reg.put(node1)
    client = new RegistryClient({ url: base, backoffMinMs: 10, backoffMaxMs: 50 })
    cache = new RouteCache(client, { cacheSize: 100, cacheTtlMs: 60_000, negativeTtlMs: 60_000, staleIfErrorMs: 60_000 })
    const events: RegistryEvent[] = []
    client.subscribe((e) => events.push(e))
    expect(await cache.resolve('32770_node1')).toEqual(node1)
    expect(await cache.resolve('32771_node1')).toBeNull()
    await waitFor(() => client!.state().connected, 3000, 'follower connected')

    const changes: unknown[] = []
    cache.on('server-changed', (...args) => changes.push(args))
    await reg.put({ ...node1, target: 'node9:32770' })
    await waitFor(() => changes.length === 1, 3000, 'move seen by the follower')
    expect(changes[0]).toEqual(['32770_node1', node1, { ...node1, target: 'node9:32770' }])
    expect(cache.resolve('32770_node1')).toEqual({ ...node1, target: 'node9:32770' })

    await reg.put({ key: '32771_node1', target: 'node1:32771' })
    await waitFor(() => cache!.resolve('32771_node1') !== null, 3000, 'negative entry replaced by the put')

    await reg.delete('32770_node1')
    await waitFor(() => cache!.resolve('32770_node1') === null, 3000, 'delete seen by the follower')
    expect(client.state().lastVersion).toBe(4)
    expect(events.map((e) => e.op)).toEqual(['put', 'put', 'delete'])
  })

  it('the follower resumes from its last version when the leader restarts', async () => {
    const reg = await setup()
    await reg.put(node1)
    client = new RegistryClient({ url: base, backoffMinMs: 10, backoffMaxMs: 50 })
    const events: RegistryEvent[] = []
    client.subscribe((e) => events.push(e))
    await waitFor(() => client!.state().connected, 3000, 'connected')
    for (const s of sockets) s.destroy()
    await waitFor(() => client!.state().connects === 2, 3000, 'reconnected')
    await reg.delete('32770_node1')
    await waitFor(() => events.length === 1, 3000, 'event after the reconnect')
    expect(events[0]).toMatchObject({ op: 'delete', version: 2 })
  })
})
