import type http from 'node:http'
import { afterEach, describe, expect, it } from 'vitest'
import { FakeRegistry, waitFor } from '../helpers/fake-registry.js'
import { startGateway, type TestGateway } from '../helpers/gateway.js'
import { httpUpstream, type TestServer } from '../helpers/upstream.js'
import { admin } from './admin-client.js'

let gw: TestGateway | null = null
let follower: TestGateway | null = null
let up: TestServer<http.Server> | null = null
let fake: FakeRegistry | null = null
afterEach(async () => {
  await follower?.close()
  await gw?.close()
  await up?.close()
  await fake?.close()
  gw = follower = up = fake = null
})

describe('workspace servers (embedded registry)', () => {
  it('puts, lists and deletes servers, and routes to them', async () => {
    up = await httpUpstream((req, res) => res.end(`agent ${req.url}`))
    gw = await startGateway()
    const key = `${up.port}_127.0.0.1`
    const put = await admin(gw, 'PUT', `/servers/${key}`, { body: { target: up.target, workspaceId: 'w1', server: 'wsagent' } })
    expect(put.status).toBe(200)
    const list = await admin(gw, 'GET', '/servers')
    expect(list.json.servers).toEqual([{ key, target: up.target, workspaceId: 'w1', server: 'wsagent' }])
    expect(await (await fetch(`http://127.0.0.1:${gw.port()}/${key}/api/project`)).text()).toBe(`agent /${key}/api/project`)
    expect((await admin(gw, 'DELETE', `/servers/${key}`)).status).toBe(200)
    expect((await admin(gw, 'GET', '/servers')).json.servers).toEqual([])
    expect((await fetch(`http://127.0.0.1:${gw.port()}/${key}/api/project`)).status).toBe(404)
    expect((await admin(gw, 'DELETE', `/servers/${key}`)).status).toBe(404)
  })

  it('needs the token for the registry protocol too', async () => {
    gw = await startGateway()
    expect((await admin(gw, 'GET', '/servers', { token: null })).status).toBe(401)
    expect((await admin(gw, 'GET', '/events', { token: null })).status).toBe(401)
  })

  it('feeds another gateway that follows it with the registry protocol', async () => {
    up = await httpUpstream((_req, res) => res.end('agent'))
    gw = await startGateway()
    const leaderAdmin = gw.gw.addresses().admin.port
    follower = await startGateway({
      workspaces: { hostSuffix: null, stripCookies: [], registry: { url: `http://127.0.0.1:${leaderAdmin}`, token: 'test-admin-token', cacheSize: 100, cacheTtlMs: 30000, negativeTtlMs: 10, staleIfErrorMs: 1000 } },
    })
    const key = `${up.port}_127.0.0.1`
    await admin(gw, 'PUT', `/servers/${key}`, { body: { target: up.target } })
    const f = follower
    await waitFor(async () => (await fetch(`http://127.0.0.1:${f.port()}/${key}/x`)).status === 200, 3000, 'the follower to route the key')
    // the follower's own admin API says its registry is remote
    const remote = await admin(f, 'GET', '/servers')
    expect(remote.status).toBe(409)
    expect(remote.json.errors[0].message).toMatch(/remote/)
  })
})

describe('POST /cache/purge', () => {
  it('drops one cached key or all of them', async () => {
    fake = await FakeRegistry.start()
    fake.put({ key: '32770_node1', target: '127.0.0.1:1' })
    gw = await startGateway({
      workspaces: { hostSuffix: null, stripCookies: [], registry: { url: fake.url, token: null, cacheSize: 100, cacheTtlMs: 60000, negativeTtlMs: 60000, staleIfErrorMs: 1000 } },
    })
    await fetch(`http://127.0.0.1:${gw.port()}/32770_node1/x`)
    await fetch(`http://127.0.0.1:${gw.port()}/32771_node2/x`)
    expect(gw.gw.cache.stats().size).toBe(2)
    const one = await admin(gw, 'POST', '/cache/purge', { body: { key: '32771_node2' } })
    expect(one.status).toBe(200)
    expect(one.json).toEqual({ ok: true, purged: '32771_node2' })
    expect(gw.gw.cache.stats().size).toBe(1)
    const all = await admin(gw, 'POST', '/cache/purge')
    expect(all.json.purged).toBe('all')
    expect(gw.gw.cache.stats().size).toBe(0)
    expect((await admin(gw, 'POST', '/cache/purge', { body: { key: 7 } })).status).toBe(400)
  })
})
