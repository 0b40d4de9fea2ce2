import { readFileSync, writeFileSync } from 'node:fs'
import type http from 'node:http'
import net from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { loadConfigFile } from '../../src/config/load.js'
import { Gateway } from '../../src/gateway.js'
import { StartupError } from '../../src/listeners/startup-error.js'
import { startGateway, type TestGateway } from '../helpers/gateway.js'
import { httpUpstream, type TestServer } from '../helpers/upstream.js'
import { admin, adminPort } from './admin-client.js'

let gw: TestGateway | null = null
let up: TestServer<http.Server> | null = null
const extra: Gateway[] = []
afterEach(async () => {
  for (const g of extra.splice(0)) await g.close()
  await gw?.close()
  await up?.close()
  gw = null
  up = null
})

/** A gateway with one config upstream and route ("master" -> an upstream that names itself). */
async function start(): Promise<TestGateway> {
  up = await httpUpstream((req, res) => res.end(`master ${req.url}`))
  gw = await startGateway({ upstreams: { master: { targets: [up.target] } }, routes: [{ id: 'master', pathPrefix: '/', upstream: 'master' }] })
  return gw
}

describe('GET /routes', () => {
  it('lists config and admin routes, each with its source, and the version', async () => {
    const g = await start()
    const before = await admin(g, 'GET', '/routes')
    expect(before.status).toBe(200)
    expect(before.json.routes).toEqual([{ id: 'master', pathPrefix: '/', upstream: 'master', source: 'config' }])
    const put = await admin(g, 'PUT', '/routes', { body: { routes: [{ id: 'api', pathPrefix: '/api', targets: [up!.target] }] } })
    expect(put.status).toBe(200)
    expect(put.json.version).toBe(before.json.version + 1)
    const after = await admin(g, 'GET', '/routes')
    expect(after.json.routes.map((r: { id: string; source: string }) => `${r.id}:${r.source}`)).toEqual(['master:config', 'api:admin'])
    expect(after.headers.etag).toBe(`"${after.json.version}"`)
  })
})

describe('PUT /routes', () => {
  it('applies the new routes to the next request', async () => {
    const g = await start()
    const other = await httpUpstream((req, res) => res.end(`other ${req.url}`))
    try {
      expect(await (await fetch(`http://127.0.0.1:${g.port()}/x/1`)).text()).toBe('master /x/1')
      await admin(g, 'PUT', '/routes', { body: { routes: [{ id: 'x', pathPrefix: '/x', targets: [other.target] }] } })
      expect(await (await fetch(`http://127.0.0.1:${g.port()}/x/1`)).text()).toBe('other /x/1')
      await admin(g, 'PUT', '/routes', { body: { routes: [] } })
      expect(await (await fetch(`http://127.0.0.1:${g.port()}/x/1`)).text()).toBe('master /x/1')
    } finally {
      await other.close()
    }
  })

  it('changes nothing when one route of the batch is invalid, and names every bad field', async () => {
    const g = await start()
    await admin(g, 'PUT', '/routes', { body: { routes: [{ id: 'keep', pathPrefix: '/keep', upstream: 'master' }] } })
    const before = await admin(g, 'GET', '/routes')
    const bad = await admin(g, 'PUT', '/routes', {
      body: {
        routes: [
          { id: 'ok', pathPrefix: '/ok', upstream: 'master' },
          { id: 'no-upstream', pathPrefix: '/n', upstream: 'nowhere' },
          { id: 'bad-target', pathPrefix: '/b', targets: ['127.0.0.1:8080', 'not a target'] },
          { id: 'ok', pathPrefix: 'relative' },
        ],
      },
    })
    expect(bad.status).toBe(400)
    const paths = bad.json.errors.map((e: { path: string }) => e.path)
    expect(paths).toContain('routes[1].upstream')
    expect(paths).toContain('routes[2].targets[1]')
    expect(paths).toContain('routes[3].id')
    expect(paths).toContain('routes[3].pathPrefix')
    const after = await admin(g, 'GET', '/routes')
    expect(after.json).toEqual(before.json)
    expect(after.json.version).toBe(before.json.version)
  })

  it('rejects link-local and cloud metadata targets in any spelling', async () => {
    const g = await start()
    const before = await admin(g, 'GET', '/routes')
    const spellings = ['169.254.169.254:80', '[::ffff:a9fe:a9fe]:80', '[fd00:ec2::254]:80', '[fe80::1]:80', '0xa9fea9fe:80', '2852039166:80', '0251.0376.0251.0376:80', '169.254.43518:80', 'metadata.google.internal:80']
    for (const target of spellings) {
      const res = await admin(g, 'PUT', '/routes', { body: { routes: [{ id: 'meta', pathPrefix: '/m', targets: [target] }] } })
      expect(res.status, target).toBe(400)
      expect(res.json.errors[0].path, target).toBe('routes[0].targets[0]')
    }
    expect((await admin(g, 'GET', '/routes')).json).toEqual(before.json)
  })

  it('allows metadata targets when admin.allowMetadataTargets is set', async () => {
    gw = await startGateway({ admin: { host: '127.0.0.1', port: 0, token: 'test-admin-token', allowMetadataTargets: true } })
    const res = await admin(gw, 'PUT', '/routes', { body: { routes: [{ id: 'meta', pathPrefix: '/m', targets: ['169.254.169.254:80'] }] } })
    expect(res.status).toBe(200)
  })

  it('refuses admin route ids that a config route already has', async () => {
    const g = await start()
    const res = await admin(g, 'PUT', '/routes', { body: { routes: [{ id: 'master', pathPrefix: '/m', upstream: 'master' }] } })
    expect(res.status).toBe(400)
    expect(res.json.errors).toEqual([{ path: 'routes[0].id', message: expect.stringMatching(/config route/) }])
  })

  it('refuses a body that is not {"routes": [...]}', async () => {
    const g = await start()
    expect((await admin(g, 'PUT', '/routes', { body: [] })).status).toBe(400)
    expect((await admin(g, 'PUT', '/routes', { body: { routes: {} } })).json.errors[0].path).toBe('routes')
    expect((await admin(g, 'PUT', '/routes', { body: { routes: [], extra: 1 } })).json.errors[0].path).toBe('extra')
  })

  it('answers 412 to a stale If-Match and changes nothing; the current one applies', async () => {
    const g = await start()
    const { version } = (await admin(g, 'GET', '/routes')).json
    const first = await admin(g, 'PUT', '/routes', { body: { routes: [{ id: 'a', pathPrefix: '/a', upstream: 'master' }] }, headers: { 'if-match': `"${version}"` } })
    expect(first.status).toBe(200)
    const stale = await admin(g, 'PUT', '/routes', { body: { routes: [] }, headers: { 'if-match': `"${version}"` } })
    expect(stale.status).toBe(412)
    expect(stale.headers['x-gateway-error']).toBe('precondition_failed')
    expect(stale.json.errors[0].path).toBe('If-Match')
    const now = await admin(g, 'GET', '/routes')
    expect(now.json.version).toBe(version + 1)
    expect(now.json.routes.map((r: { id: string }) => r.id)).toEqual(['master', 'a'])
    expect((await admin(g, 'DELETE', '/routes/a', { headers: { 'if-match': String(version) } })).status).toBe(412)
    expect((await admin(g, 'DELETE', '/routes/a', { headers: { 'if-match': String(version + 1) } })).status).toBe(200)
  })

  it('lets exactly one of two concurrent changes with the same If-Match through', async () => {
    const g = await start()
    const { version } = (await admin(g, 'GET', '/routes')).json
    const body = (id: string) => ({ routes: [{ id, pathPrefix: `/${id}`, upstream: 'master' }] })
    const results = await Promise.all(['a', 'b'].map((id) => admin(g, 'PUT', '/routes', { body: body(id), headers: { 'if-match': `"${version}"` } })))
    expect(results.map((r) => r.status).sort()).toEqual([200, 412])
  })
})

describe('PUT and DELETE /routes/{id}', () => {
  it('adds, replaces and removes one admin route, bumping the version each time', async () => {
    const g = await start()
    const v0 = (await admin(g, 'GET', '/routes')).json.version
    const added = await admin(g, 'PUT', '/routes/one', { body: { pathPrefix: '/one', upstream: 'master' } })
    expect(added.status).toBe(201)
    expect(added.json.version).toBe(v0 + 1)
    const replaced = await admin(g, 'PUT', '/routes/one', { body: { id: 'one', pathPrefix: '/uno', upstream: 'master' } })
    expect(replaced.status).toBe(200)
    expect(replaced.json.routes.find((r: { id: string }) => r.id === 'one').pathPrefix).toBe('/uno')
    expect((await admin(g, 'GET', '/routes/one')).json.route).toEqual({ id: 'one', pathPrefix: '/uno', upstream: 'master', source: 'admin' })
    const removed = await admin(g, 'DELETE', '/routes/one')
    expect(removed.status).toBe(200)
    expect(removed.json.version).toBe(v0 + 3)
    expect((await admin(g, 'GET', '/routes/one')).status).toBe(404)
  })

  it('names the bad fields of one route without the batch prefix', async () => {
    const g = await start()
    const res = await admin(g, 'PUT', '/routes/one', { body: { pathPrefix: 'x', targets: ['169.254.169.254:80'] } })
    expect(res.status).toBe(400)
    expect(res.json.errors.map((e: { path: string }) => e.path).sort()).toEqual(['pathPrefix', 'targets[0]'])
    expect((await admin(g, 'PUT', '/routes/one', { body: { id: 'two', upstream: 'master' } })).json.errors[0].path).toBe('id')
  })

  it('answers 404 for an unknown id and 409 for a config route', async () => {
    const g = await start()
    expect((await admin(g, 'DELETE', '/routes/nope')).status).toBe(404)
    const del = await admin(g, 'DELETE', '/routes/master')
    expect(del.status).toBe(409)
    expect(del.json.errors[0].message).toMatch(/config/)
    expect((await admin(g, 'PUT', '/routes/master', { body: { upstream: 'master' } })).status).toBe(409)
  })
})

describe('length limits on route ids and path prefixes', () => {
  const tooLong = `must be at most 128 characters (it has 129), got "${'i'.repeat(56)}...`

  it('accepts a 128-character id and refuses 129 in a PUT /routes body, naming the path', async () => {
    const g = await start()
    const ok = await admin(g, 'PUT', '/routes', { body: { routes: [{ id: 'i'.repeat(128), pathPrefix: '/i', upstream: 'master' }] } })
    expect(ok.status).toBe(200)
    const bad = await admin(g, 'PUT', '/routes', { body: { routes: [{ id: 'i'.repeat(129), pathPrefix: '/i', upstream: 'master' }] } })
    expect(bad.status).toBe(400)
    expect(bad.json.errors).toEqual([{ path: 'routes[0].id', message: tooLong }])
  })

  it('refuses a 129-character id in the URL of PUT, DELETE and GET /routes/{id} with the schema message', async () => {
    const g = await start()
    const url = `/routes/${'i'.repeat(128)}`
    expect((await admin(g, 'PUT', url, { body: { pathPrefix: '/i', upstream: 'master' } })).status).toBe(201)
    expect((await admin(g, 'GET', url)).status).toBe(200)
    expect((await admin(g, 'DELETE', url)).status).toBe(200)
    const before = await admin(g, 'GET', '/routes')
    for (const method of ['PUT', 'DELETE', 'GET']) {
      const res = await admin(g, method, `${url}i`, method === 'PUT' ? { body: { pathPrefix: '/i', upstream: 'master' } } : {})
      expect(res.status, method).toBe(400)
      expect(res.json.errors, method).toEqual([{ path: 'id', message: tooLong }])
    }
    expect((await admin(g, 'GET', '/routes')).json).toEqual(before.json)
  })

  it('accepts an 8192-character pathPrefix and refuses 8193', async () => {
    const g = await start()
    const prefix = (length: number) => `/${'p'.repeat(length - 1)}`
    expect((await admin(g, 'PUT', '/routes/long', { body: { pathPrefix: prefix(8192), upstream: 'master' } })).status).toBe(201)
    const bad = await admin(g, 'PUT', '/routes/long', { body: { pathPrefix: prefix(8193), upstream: 'master' } })
    expect(bad.status).toBe(400)
    expect(bad.json.errors).toEqual([{ path: 'pathPrefix', message: `must be at most 8192 characters (it has 8193), got "/${'p'.repeat(55)}...` }])
  })

  it('shortens a body id that does not match the URL in its message', async () => {
    const g = await start()
    const res = await admin(g, 'PUT', '/routes/one', { body: { id: 'x'.repeat(5000), upstream: 'master' } })
    expect(res.status).toBe(400)
    expect(res.json.errors).toEqual([{ path: 'id', message: `"${'x'.repeat(56)}... does not match the id in the URL ("one")` }])
  })
})

describe('persistence', () => {
  it('keeps admin routes across a restart on the same state file', async () => {
    const g = await start()
    await admin(g, 'PUT', '/routes', { body: { routes: [{ id: 'kept', host: 'ide.example.com', pathPrefix: '/k', upstream: 'master' }] } })
    const before = (await admin(g, 'GET', '/routes')).json.routes
    await g.gw.close()
    const again = await Gateway.start(await loadConfigFile(g.configFile), { log: () => {} })
    extra.push(again)
    const after = await admin(again.addresses().admin.port, 'GET', '/routes')
    expect(after.json.routes).toEqual(before)
    const res = await fetch(`http://127.0.0.1:${again.addresses().http.port}/k/1`, { headers: { host: 'ide.example.com' } })
    expect(await res.text()).toBe('master /k/1')
  })

  it('goes on from the last routes version after a restart: an If-Match from before it gets 412', async () => {
    const g = await start()
    await admin(g, 'PUT', '/routes', { body: { routes: [{ id: 'a', pathPrefix: '/a', upstream: 'master' }] } })
    // a reload bumps the version too, and must be remembered as well
    expect((await admin(g, 'POST', '/reload')).status).toBe(200)
    const last = (await admin(g, 'GET', '/routes')).json.version as number
    await g.gw.close()
    for (let restart = 1; restart <= 2; restart++) {
      const again = await Gateway.start(await loadConfigFile(g.configFile), { log: () => {} })
      extra.push(again)
      const port = again.addresses().admin.port
      const now = (await admin(port, 'GET', '/routes')).json.version as number
      expect(now).toBe(last + restart) // never a version served before, even with no change in between
      expect((await admin(port, 'DELETE', '/routes/a', { headers: { 'if-match': String(last) } })).status).toBe(412)
      await again.close()
    }
  })

  it('refuses to start on a state file whose routesVersion is not a count', async () => {
    const g = await start()
    await g.gw.close()
    const stateFile = JSON.parse(readFileSync(g.configFile, 'utf8')).stateFile as string
    writeFileSync(stateFile, JSON.stringify({ version: 3, servers: [], routesVersion: 'seven' }))
    const err = await Gateway.start(await loadConfigFile(g.configFile), { log: () => {} }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(StartupError)
    expect((err as Error).message).toContain('routesVersion')
  })

  it('refuses to start on a state file whose routes are invalid, naming the file and the path', async () => {
    const g = await start()
    await g.gw.close()
    const stateFile = JSON.parse(readFileSync(g.configFile, 'utf8')).stateFile as string
    writeFileSync(stateFile, JSON.stringify({ version: 3, servers: [], routes: [{ id: 'ok', upstream: 'master' }, { id: 'bad', targets: ['169.254.169.254:80'] }] }))
    const err = await Gateway.start(await loadConfigFile(g.configFile), { log: () => {} }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(StartupError)
    expect((err as Error).message).toContain(stateFile)
    expect((err as Error).message).toContain('routes[1].targets[0]')
  })
})

describe('a client that half-closes after its request', () => {
  // `printf 'PUT ...' | nc -N`: the FIN follows the last body byte. Node's HTTP server ends such
  // a connection at once by default, so the change was made and its answer never sent.
  it('still gets the answer to a change, and the change is made once', async () => {
    const g = await start()
    const body = JSON.stringify({ routes: [{ id: 'api', pathPrefix: '/api', targets: [up!.target] }] })
    const socket = net.connect(adminPort(g), '127.0.0.1')
    socket.on('error', () => {})
    const chunks: Buffer[] = []
    socket.on('data', (d: Buffer) => chunks.push(d))
    const closed = new Promise((r) => socket.once('close', r))
    socket.end(`PUT /routes HTTP/1.1\r\nHost: 127.0.0.1:${adminPort(g)}\r\nAuthorization: Bearer test-admin-token\r\n` +
      `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`)
    await closed
    const raw = Buffer.concat(chunks).toString('latin1')
    expect(raw).toMatch(/^HTTP\/1\.1 200 OK\r\n/)
    expect(JSON.parse(raw.slice(raw.indexOf('\r\n\r\n') + 4)).routes.map((r: { id: string }) => r.id)).toEqual(['master', 'api'])
    expect((await admin(g, 'GET', '/routes')).json.routes).toHaveLength(2)
  })
})
