// A reload with workers goes through everywhere or nowhere. The primary runs in this test
// process (so its ask timeout can be short); its two workers are real processes running the
// compiled command, as in production. A stopped worker (SIGSTOP) is the deterministic stand-in
// for one that cannot answer in time; stopping all workers but one also steers every new
// connection to that one (they share one listening socket), so each worker is checked on its own.

import cluster from 'node:cluster'
import { once } from 'node:events'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, expect, it } from 'vitest'
import { request } from '../helpers/fault-scene.js'
import { waitFor } from '../helpers/fake-registry.js'
import { connectionRefused } from '../helpers/test-scope.js'
import { freePort, httpUpstream } from '../helpers/upstream.js'
import { startWorkerCluster, type TestWorker } from '../helpers/worker-cluster.js'

/** Short, so the test waits little; long enough for a busy 2-core machine to prepare a reload. */
const ASK_TIMEOUT_MS = 2000

const cleanups: (() => Promise<unknown> | void)[] = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

/** A primary in this process, two real workers, upstreams a and b, one route to a. */
async function startScene() {
  const a = await httpUpstream((req, res) => res.end(`a:${req.url}`))
  const b = await httpUpstream((req, res) => res.end(`b:${req.url}`))
  cleanups.push(() => a.close(), () => b.close())
  const dir = mkdtempSync(join(tmpdir(), 'gw-cluster-reload-'))
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }))
  const [port, adminPort, newPort] = [await freePort(), await freePort(), await freePort()]
  const configFile = join(dir, 'gw.json')
  const config = {
    listeners: [{ name: 'http', port, host: '127.0.0.1' }],
    upstreams: { a: { targets: [a.target] }, b: { targets: [b.target] } },
    routes: [{ id: 'all', pathPrefix: '/', upstream: 'a' }],
    admin: { host: '127.0.0.1', port: adminPort, token: 'tok' },
    stateFile: join(dir, 'state.json'),
    workers: 2,
  }
  writeFileSync(configFile, JSON.stringify(config))
  const { workers, steer } = await startWorkerCluster(configFile, 2, (c) => cleanups.push(c), { askTimeoutMs: ASK_TIMEOUT_MS })
  expect(workers).toHaveLength(2)
  const admin = (path: string, method = 'GET') => fetch(`http://127.0.0.1:${adminPort}${path}`, { method, headers: { authorization: 'Bearer tok' } })
  const routes = async () => await (await admin('/routes')).json() as { version: number; routes: { id: string }[] }
  /** A request that only `only` can accept: every other worker is stopped meanwhile. */
  const through = (only: TestWorker, toPort: number, path: string, gone: TestWorker[] = []) => steer(only, async () => {
    const r = await request(toPort, path)
    return { status: r.status, body: r.text }
  }, gone)

  return { config, configFile, port, newPort, workers, admin, routes, through }
}

it('refuses a reload that one worker cannot prepare in time, and leaves the primary and every worker on the old config', async () => {
  const { config, configFile, port, newPort, workers, admin, routes, through } = await startScene()
  for (const w of workers) expect(await through(w, port, '/new/x')).toEqual({ status: 200, body: 'a:/new/x' })
  const before = await routes()
  expect(before.routes.map((r) => r.id)).toEqual(['all'])

  // A new route and a new listener; one worker cannot answer.
  writeFileSync(configFile, JSON.stringify({
    ...config,
    listeners: [...config.listeners, { name: 'extra', port: newPort, host: '127.0.0.1' }],
    routes: [...config.routes, { id: 'new', pathPrefix: '/new', upstream: 'b' }],
  }))
  const stopped = workers[1]
  process.kill(stopped.pid, 'SIGSTOP')
  const refusedReload = await admin('/reload', 'POST')
  expect(refusedReload.status).toBe(400)
  const { errors } = await refusedReload.json() as { errors: { path: string; message: string }[] }
  expect(errors.map((e) => e.message)).toContainEqual(expect.stringMatching(new RegExp(`^worker \\d \\(pid ${stopped.pid}\\) did not prepare the reload in ${ASK_TIMEOUT_MS} ms$`)))
  expect(await routes()).toEqual(before)

  // Once it runs again it meets the prepare and the abort behind it; each worker says when it
  // has let its reload go, so the new port cannot be bound after the check below.
  process.kill(stopped.pid, 'SIGCONT')
  for (const w of workers) await waitFor(() => w.stderr().includes('was aborted by the primary'), 10_000, `worker ${w.pid} to abort the reload`)
  await waitFor(() => connectionRefused(newPort), 5000, `port ${newPort} to be closed`)
  for (const w of workers) expect(await through(w, port, '/new/x')).toEqual({ status: 200, body: 'a:/new/x' })
  expect(await routes()).toEqual(before)

  // With every worker answering, the same file goes through everywhere.
  const ok = await admin('/reload', 'POST')
  expect(ok.status).toBe(200)
  const after = await routes()
  expect(after.version).toBe(before.version + 1)
  expect(after.routes.map((r) => r.id)).toEqual(['all', 'new'])
  // The answer comes once every worker serves the new config.
  for (const w of workers) {
    expect(await through(w, port, '/new/x')).toEqual({ status: 200, body: 'b:/new/x' })
    expect(await through(w, newPort, '/new/y')).toEqual({ status: 200, body: 'b:/new/y' })
  }
}, 60_000)

it('replaces a worker that prepared a reload but does not confirm the commit, and says so in the answer', async () => {
  const { config, configFile, port, workers, admin, routes, through } = await startScene()
  const stuck = workers[1]
  // Stopped the moment its "prepared" arrives: the primary's commit, sent after every answer is
  // in, reaches a process that cannot act on it.
  const worker = Object.values(cluster.workers ?? {}).find((w) => w?.process.pid === stuck.pid)!
  const stopWhenPrepared = (m: { type?: string }): void => {
    if (m.type === 'reload-prepared') process.kill(stuck.pid, 'SIGSTOP')
  }
  worker.on('message', stopWhenPrepared)
  writeFileSync(configFile, JSON.stringify({ ...config, routes: [...config.routes, { id: 'new', pathPrefix: '/new', upstream: 'b' }] }))
  const reload = await admin('/reload', 'POST')
  worker.off('message', stopWhenPrepared)
  expect(reload.status).toBe(200)
  const { warnings } = await reload.json() as { warnings?: string[] }
  expect(warnings).toEqual([expect.stringMatching(new RegExp(`^worker 1 \\(pid ${stuck.pid}\\) did not confirm the reload in ${ASK_TIMEOUT_MS} ms; it is replaced`))])
  expect((await routes()).routes.map((r) => r.id)).toEqual(['all', 'new'])

  // Running again, it drains and leaves; its replacement starts on the reloaded config.
  process.kill(stuck.pid, 'SIGCONT')
  await once(worker, 'exit')
  await waitFor(() => workers.length === 3, 15_000, 'a replacement worker')
  const replacement = workers[2]
  await waitFor(() => replacement.stderr().includes('listening on'), 15_000, 'the replacement to listen')
  for (const w of [workers[0], replacement]) expect(await through(w, port, '/new/x', [stuck])).toEqual({ status: 200, body: 'b:/new/x' })
}, 60_000)

it('starts a worker that replaces a dead one on the config last reloaded, not on the file as it is now', async () => {
  const { config, configFile, port, workers, admin, through } = await startScene()
  writeFileSync(configFile, JSON.stringify({ ...config, routes: [...config.routes, { id: 'new', pathPrefix: '/new', upstream: 'b' }] }))
  expect((await admin('/reload', 'POST')).status).toBe(200)
  // Edited again, not reloaded: the running cluster must not pick this up piecemeal.
  writeFileSync(configFile, JSON.stringify({ ...config, routes: [{ id: 'all', pathPrefix: '/', upstream: 'b' }] }))
  const dead = workers[0]
  process.kill(dead.pid, 'SIGKILL')
  await waitFor(() => workers.length === 3, 15_000, 'a replacement worker')
  const replacement = workers[2]
  await waitFor(() => replacement.stderr().includes('listening on'), 15_000, 'the replacement to listen')
  const live = workers.filter((w) => w !== dead)
  for (const w of live) {
    await waitFor(async () => (await through(w, port, '/new/x', [dead])).body === 'b:/new/x', 5000, `worker ${w.pid} on the reloaded routes`)
    expect(await through(w, port, '/other', [dead])).toEqual({ status: 200, body: 'a:/other' })
  }
}, 60_000)
