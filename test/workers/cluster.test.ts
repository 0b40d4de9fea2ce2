// `workers: N` end to end with the real command: one admin API for all workers, changes
// reaching every worker, figures added up, a dead worker restarted while the others serve,
// and a clean drain on SIGTERM.

import { spawn, execFileSync, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, expect, it } from 'vitest'
import { COMPILED_CLI } from '../helpers/compiled-cli.js'
import { waitFor } from '../helpers/fake-registry.js'
import { httpUpstream, freePort } from '../helpers/upstream.js'

const cleanups: (() => Promise<unknown> | void)[] = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

/** A fresh connection per request, so the kernel spreads them over the workers. */
async function get(port: number, path: string): Promise<{ status: number; body: string }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { headers: { connection: 'close' } })
  return { status: res.status, body: await res.text() }
}

interface Cluster {
  readonly child: ChildProcess
  readonly admin: (path: string, init?: RequestInit) => Promise<Response>
  /** The traffic listener's port. */
  readonly port: number
  readonly configFile: string
  readonly config: { readonly listeners: readonly object[]; readonly routes: readonly object[] }
}

/** `gateway start` with 2 workers, one listener and a catch-all route to `upstreamTarget`; resolves once ready. */
async function startCluster(upstreamTarget: string): Promise<Cluster> {
  const dir = mkdtempSync(join(tmpdir(), 'gw-workers-'))
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }))
  const [port, adminPort] = [await freePort(), await freePort()]
  const configFile = join(dir, 'gw.json')
  const config = {
    listeners: [{ name: 'http', port, host: '127.0.0.1' }],
    upstreams: { up: { targets: [upstreamTarget] } },
    routes: [{ id: 'all', pathPrefix: '/', upstream: 'up' }],
    admin: { host: '127.0.0.1', port: adminPort, token: 'tok' },
    stateFile: join(dir, 'state.json'),
    workers: 2,
  }
  writeFileSync(configFile, JSON.stringify(config))
  const child: ChildProcess = spawn(process.execPath, [COMPILED_CLI, 'start', '--config', configFile], { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr!.on('data', (d) => (stderr += d))
  cleanups.push(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL')
      await once(child, 'exit')
    }
  })
  const admin = (path: string, init: RequestInit = {}) => fetch(`http://127.0.0.1:${adminPort}${path}`, { ...init, headers: { authorization: 'Bearer tok', ...init.headers } })
  await waitFor(async () => (await fetch(`http://127.0.0.1:${adminPort}/readyz`).catch(() => null))?.status === 200, 15_000, `the cluster to be ready (${stderr})`)
  return { child, admin, port, configFile, config }
}

it('runs N workers behind one admin API and keeps serving when one dies', async () => {
  const up = await httpUpstream((req, res) => res.end(`up:${req.url}`))
  cleanups.push(() => up.close())
  const { child, admin, port } = await startCluster(up.target)
  const workerPids = () => execFileSync('pgrep', ['-P', String(child.pid)]).toString().trim().split('\n').map(Number)
  expect(workerPids()).toHaveLength(2)

  for (let i = 0; i < 10; i++) expect(await get(port, `/a${i}`)).toEqual({ status: 200, body: `up:/a${i}` })
  const stats = await (await admin('/stats')).json() as { workers: number; requests: { total: number } }
  expect(stats.workers).toBe(2)
  expect(stats.requests.total).toBe(10)
  expect(await (await admin('/metrics')).text()).toContain('gateway_requests_total{listener="http",route="all",status_class="2xx"} 10')

  // A registry change and a route change reach every worker.
  expect((await admin(`/servers/${up.port}_node1`, { method: 'PUT', body: JSON.stringify({ target: up.target }) })).status).toBe(200)
  expect((await admin('/routes', { method: 'PUT', body: JSON.stringify({ routes: [{ id: 'blocked', pathPrefix: '/blocked', targets: ['127.0.0.1:9'] }] }) })).status).toBe(200)
  await waitFor(async () => {
    const answers = await Promise.all(Array.from({ length: 8 }, () => get(port, `/${up.port}_node1/x`)))
    return answers.every((a) => a.body === `up:/${up.port}_node1/x`)
  }, 5000, 'the workspace server on every worker')
  // The admin route to a dead port is in force everywhere: nothing reaches the upstream.
  await waitFor(async () => {
    const answers = await Promise.all(Array.from({ length: 8 }, () => get(port, '/blocked')))
    return answers.every((a) => a.status === 502 || a.status === 503)
  }, 5000, 'the admin route on every worker')

  // One worker dies: the other keeps serving, and a new one takes its place.
  const [victim] = workerPids()
  process.kill(victim, 'SIGKILL')
  for (let i = 0; i < 5; i++) expect((await get(port, '/during')).status).toBe(200)
  await waitFor(() => { const pids = workerPids(); return pids.length === 2 && !pids.includes(victim) }, 10_000, 'the worker to be restarted')
  await waitFor(async () => (await admin('/readyz')).status === 200, 10_000, 'ready again')
  // The new worker got the registry and the routes.
  const after = await Promise.all(Array.from({ length: 8 }, () => get(port, `/${up.port}_node1/y`)))
  expect(after.map((a) => a.status)).toEqual(Array(8).fill(200))

  child.kill('SIGTERM')
  const [code] = await once(child, 'exit')
  expect(code).toBe(0)
}, 60_000)

it('refuses a reload whose new listener cannot be bound, before the primary or any worker changes', async () => {
  const up = await httpUpstream((req, res) => res.end(`up:${req.url}`))
  cleanups.push(() => up.close())
  const taken = net.createServer().listen(0, '127.0.0.1')
  await once(taken, 'listening')
  cleanups.push(() => new Promise<void>((resolve) => taken.close(() => resolve())))
  const takenPort = (taken.address() as net.AddressInfo).port
  const { child, admin, port, configFile, config } = await startCluster(up.target)

  writeFileSync(configFile, JSON.stringify({
    ...config,
    listeners: [...config.listeners, { name: 'extra', port: takenPort, host: '127.0.0.1' }],
    routes: [...config.routes, { id: 'new', pathPrefix: '/new', upstream: 'up' }],
  }))
  const res = await admin('/reload', { method: 'POST' })
  expect(res.status).toBe(400)
  const body = await res.json() as { errors: { path: string; message: string }[] }
  expect(body.errors[0].path).toBe('listeners[1]')
  expect(body.errors[0].message).toContain('already in use')
  // Nothing changed anywhere: the primary's routes and the workers' traffic are as before.
  const routes = await (await admin('/routes')).json() as { routes: { id: string }[] }
  expect(routes.routes.map((r) => r.id)).toEqual(['all'])
  expect(await get(port, '/x')).toEqual({ status: 200, body: 'up:/x' })
  child.kill('SIGTERM')
  await once(child, 'exit')
}, 60_000)
