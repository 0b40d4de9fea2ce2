// A worker's side of the two-phase reload, on a real gateway in this process: what the primary
// sends is all it reads, nothing shows before the commit, and every way a reload can end
// without one (abort, a newer reload, silence) leaves the running config and no new port.

import { X509Certificate } from 'node:crypto'
import diagnosticsChannel from 'node:diagnostics_channel'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import tls from 'node:tls'
import { afterEach, expect, it } from 'vitest'
import { FileSnapshot, type WireFiles } from '../../src/config/file-snapshot.js'
import { createCertificates } from '../../src/listeners/certificate-authority.js'
import { gatewayEvent } from '../../src/observability/channels.js'
import type { ToPrimary } from '../../src/workers/messages.js'
import { ReloadFollower } from '../../src/workers/reload-follower.js'
import { request } from '../helpers/fault-scene.js'
import { waitFor } from '../helpers/fake-registry.js'
import { connectionRefused } from '../helpers/test-scope.js'
import { startGateway, type TestGateway } from '../helpers/gateway.js'
import { freePort, httpUpstream } from '../helpers/upstream.js'

const cleanups: (() => Promise<unknown> | void)[] = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

interface Scene {
  g: TestGateway
  follower: ReloadFollower
  /** What the follower told the primary. */
  sent: ToPrimary[]
  /** The running config, as written to the config file. */
  config: Record<string, unknown>
  /** A free port for a listener the reload adds. */
  newPort: number
}

/** A gateway routing everything to upstream `a` (upstream `b` is configured, unused). */
async function scene(): Promise<Scene> {
  const a = await httpUpstream((req, res) => res.end(`a ${req.url}`))
  const b = await httpUpstream((req, res) => res.end(`b ${req.url}`))
  cleanups.push(() => a.close(), () => b.close())
  const config = { upstreams: { a: { targets: [a.target] }, b: { targets: [b.target] } }, routes: [{ id: 'all', pathPrefix: '/', upstream: 'a' }] }
  const g = await startGateway(config)
  cleanups.push(() => g.close())
  const sent: ToPrimary[] = []
  const full = JSON.parse(readFileSync(g.configFile, 'utf8')) as Record<string, unknown>
  return { g, follower: new ReloadFollower(g.gw, (m) => sent.push(m)), sent, config: full, newPort: await freePort() }
}

/** The next config: a route /new to `b`, and a listener on `newPort` (HTTPS when `tls` is given). */
function nextConfig(s: Scene, tlsFiles?: { cert: string; key: string }): Record<string, unknown> {
  const listeners = [...(s.config.listeners as object[]), { name: 'extra', port: s.newPort, host: '127.0.0.1', ...(tlsFiles && { tls: tlsFiles }) }]
  return { ...s.config, listeners, routes: [...(s.config.routes as object[]), { id: 'new', pathPrefix: '/new', upstream: 'b' }] }
}

/** Writes `config` and reads it (and `more` files) as a primary would: the wire form it sends. */
async function primaryRead(s: Scene, config: Record<string, unknown>, more: string[] = []): Promise<WireFiles> {
  writeFileSync(s.g.configFile, JSON.stringify(config))
  const snapshot = FileSnapshot.recording()
  for (const file of [s.g.configFile, ...more]) await snapshot.read(file)
  return await snapshot.toWire(1024 * 1024) as WireFiles
}



/** One GET on its own connection: the body. */
const bodyOf = async (port: number, path: string): Promise<string> => (await request(port, path)).text

const prepared = (s: Scene, id: number) => waitFor(() => s.sent.find((m) => m.type === 'reload-prepared' && m.id === id), 5000, `reload ${id} to be prepared`)

it('prepares from the bytes the primary read, not from the files on disk now', async () => {
  const s = await scene()
  const dir = mkdtempSync(join(tmpdir(), 'gw-follower-'))
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }))
  const files = await createCertificates({ outDir: dir, hosts: ['127.0.0.1'] })
  const sent = await primaryRead(s, nextConfig(s, { cert: files.cert, key: files.key }), [files.cert, files.key])
  const served = new X509Certificate(readFileSync(files.cert)).fingerprint256
  // After the primary read them: a config that is not JSON, a renewal half written.
  writeFileSync(s.g.configFile, '{ "listeners": [')
  writeFileSync(files.cert, readFileSync(files.cert, 'utf8').slice(0, 100))

  const result = s.follower.prepare({ type: 'reload-prepare', id: 1, files: sent, giveUpMs: 10_000 })
  expect(await prepared(s, 1)).toEqual({ type: 'reload-prepared', id: 1, errors: [] })
  s.follower.commit(1)
  expect(await result).toEqual({ ok: true })
  expect(await bodyOf(s.g.port(), '/new/x')).toBe('b /new/x')
  const presented = await new Promise<string>((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port: s.newPort, rejectUnauthorized: false }, () => {
      resolve(socket.getPeerX509Certificate()?.fingerprint256 ?? '')
      socket.end()
    }).on('error', reject)
  })
  expect(presented).toBe(served)
})

it('refuses a file the primary did not send instead of reading it from disk', async () => {
  const s = await scene()
  const page = join(s.g.dir, 'down.html')
  writeFileSync(page, '<p>down</p>')
  const config = { ...s.config, upstreams: { ...(s.config.upstreams as object), b: { ...(s.config.upstreams as { b: object }).b, errorPage: page } } }
  const result = await s.follower.prepare({ type: 'reload-prepare', id: 1, files: await primaryRead(s, config), giveUpMs: 10_000 })
  expect(result.ok).toBe(false)
  expect(s.sent).toEqual([{ type: 'reload-prepared', id: 1, errors: [{ path: 'upstreams.b.errorPage', message: `cannot read ${page}: not among the files the primary read for this reload` }] }])
})

it('serves nothing new before the commit: a connection to the new listener waits for it', async () => {
  const s = await scene()
  const result = s.follower.prepare({ type: 'reload-prepare', id: 1, files: await primaryRead(s, nextConfig(s)), giveUpMs: 10_000 })
  await prepared(s, 1)
  let early: string | null = null
  const held = bodyOf(s.newPort, '/new/x').then((body) => (early = body))
  // A whole exchange on the running listener, meanwhile: the held one was accepted by then.
  expect(await bodyOf(s.g.port(), '/new/x')).toBe('a /new/x')
  expect(early).toBeNull()
  s.follower.commit(1)
  expect(await held).toBe('b /new/x')
  expect(await result).toEqual({ ok: true })
})

it('aborts on the primary word, also when it comes while the reload is still being prepared', async () => {
  const s = await scene()
  const version = s.g.gw.version
  const result = s.follower.prepare({ type: 'reload-prepare', id: 1, files: await primaryRead(s, nextConfig(s)), giveUpMs: 10_000 })
  s.follower.abort(1)
  expect((await result).errors).toEqual([{ path: '', message: 'reload 1 was aborted by the primary (another process could not prepare it)' }])
  expect(s.sent).toEqual([]) // the primary stopped waiting for this answer
  expect(await connectionRefused(s.newPort)).toBe(true)
  expect(s.g.gw.version).toBe(version)
  expect(await bodyOf(s.g.port(), '/new/x')).toBe('a /new/x')
})

it('gives up a prepared reload for a newer one', async () => {
  const s = await scene()
  const files = await primaryRead(s, nextConfig(s))
  const first = s.follower.prepare({ type: 'reload-prepare', id: 1, files, giveUpMs: 10_000 })
  await prepared(s, 1)
  const second = s.follower.prepare({ type: 'reload-prepare', id: 2, files, giveUpMs: 10_000 })
  expect((await first).errors).toEqual([{ path: '', message: 'reload 1 was replaced by reload 2' }])
  await prepared(s, 2)
  s.follower.commit(1) // too late, and not the one waiting
  s.follower.commit(2)
  expect(await second).toEqual({ ok: true })
  expect(await bodyOf(s.newPort, '/new/x')).toBe('b /new/x')
})

it('lets go of a prepared reload that hears nothing, and says so when the commit comes too late', async () => {
  const s = await scene()
  const events: Record<string, unknown>[] = []
  const onEvent = (m: unknown) => events.push(m as Record<string, unknown>)
  diagnosticsChannel.subscribe(gatewayEvent.name, onEvent)
  cleanups.push(() => { diagnosticsChannel.unsubscribe(gatewayEvent.name, onEvent) })
  const result = s.follower.prepare({ type: 'reload-prepare', id: 1, files: await primaryRead(s, nextConfig(s)), giveUpMs: 200 })
  await prepared(s, 1)
  expect(await connectionRefused(s.newPort)).toBe(false) // bound, waiting for the primary
  expect((await result).errors).toEqual([{ path: '', message: 'reload 1 was given up: neither commit nor abort came from the primary within 200 ms' }])
  expect(await connectionRefused(s.newPort)).toBe(true)
  expect(await bodyOf(s.g.port(), '/new/x')).toBe('a /new/x')
  s.follower.commit(1)
  expect(events.at(-1)).toEqual({
    event: 'reload', ok: false,
    errors: [{ path: '', message: `the primary committed reload 1 after this worker (pid ${process.pid}) gave up on it: this worker still runs the previous config; restart it` }],
  })
})
