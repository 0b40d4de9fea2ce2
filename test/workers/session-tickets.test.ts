// With workers, a client's next connection may land on any worker (they share the listening
// socket), so every worker must open the session tickets every other one issued, after a
// reload and in a worker restarted after one too. The primary runs in this test process, its
// two workers are real processes running the compiled command (as in cluster-reload.test.ts).
//
// node:cluster alone gets this right only until the first reload: it hands the first worker's
// ticket keys to the others when they listen on the shared socket (its queryServer data), but
// a reload gives each worker new contexts with keys of its own, and a replacement worker is
// handed the first worker's keys from before the reload. Hence a reload in every test.
//
// Left to the kernel, a run of connections often lands on one worker: SCHED_NONE wakes
// whichever process it likes, so ten reconnects in a row could all reach one worker and pass
// with separate keys per worker. Each connection is steered instead: every other worker is
// stopped (SIGSTOP) while it is made, so the one left running must accept it.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, expect, it } from 'vitest'
import { createCertificates } from '../../src/listeners/certificate-authority.js'
import { waitFor } from '../helpers/fake-registry.js'
import { visit, type Visit } from '../helpers/tls-session.js'
import { freePort, httpUpstream } from '../helpers/upstream.js'
import { startWorkerCluster, type TestWorker } from '../helpers/worker-cluster.js'

const cleanups: (() => Promise<unknown> | void)[] = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

/** A primary in this process and two real workers serving one HTTPS listener. */
async function startScene() {
  const up = await httpUpstream((_req, res) => res.end('ok'))
  cleanups.push(() => up.close())
  const dir = mkdtempSync(join(tmpdir(), 'gw-session-tickets-'))
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }))
  const files = await createCertificates({ outDir: join(dir, 'tls'), hosts: ['localhost', '127.0.0.1'] })
  const [port, adminPort] = [await freePort(), await freePort()]
  const configFile = join(dir, 'gw.json')
  writeFileSync(configFile, JSON.stringify({
    listeners: [{ name: 'https', port, host: '127.0.0.1', tls: { cert: files.cert, key: files.key } }],
    upstreams: { up: { targets: [up.target] } },
    routes: [{ id: 'all', pathPrefix: '/', upstream: 'up' }],
    admin: { host: '127.0.0.1', port: adminPort, token: 'tok' },
    stateFile: join(dir, 'state.json'),
    workers: 2,
  }))
  const { workers, steer } = await startWorkerCluster(configFile, 2, (c) => cleanups.push(c))
  expect(workers).toHaveLength(2)
  const reload = async () => {
    const res = await fetch(`http://127.0.0.1:${adminPort}/reload`, { method: 'POST', headers: { authorization: 'Bearer tok' } })
    expect(res.status).toBe(200)
  }
  /** A visit only `only` can accept: every other live worker is stopped meanwhile. */
  const through = (only: TestWorker, session: Buffer | undefined, gone: TestWorker[] = []): Promise<Visit> =>
    steer(only, () => visit(port, { session }), gone)
  return { workers, through, reload }
}

it('resumes a session on another worker than the one that issued it, ten times in a row, across a reload', async () => {
  const { workers, through, reload } = await startScene()
  let last = await through(workers[0], undefined)
  expect(last).toMatchObject({ reused: false, status: 200 })
  await reload()
  for (let i = 1; i <= 10; i++) {
    last = await through(workers[i % 2], last.session)
    expect(last, `reconnect ${i}, on worker ${i % 2}`).toMatchObject({ reused: true, status: 200 })
  }
}, 60_000)

it('resumes, on the worker that replaced a dead one after a reload, a session the dead one issued', async () => {
  const { workers, through, reload } = await startScene()
  const [dead, survivor] = workers
  await reload()
  const issued = await through(dead, undefined)
  expect(issued).toMatchObject({ reused: false, status: 200 })
  process.kill(dead.pid, 'SIGKILL')
  await waitFor(() => workers.length === 3, 15_000, 'a replacement worker')
  const replacement = workers[2]
  await waitFor(() => replacement.stderr().includes('listening on'), 15_000, 'the replacement to listen')
  const back = await through(replacement, issued.session, [dead])
  expect(back).toMatchObject({ reused: true, status: 200 })
  // And the other way: what the replacement issues, the worker that stayed opens.
  expect(await through(survivor, back.session, [dead])).toMatchObject({ reused: true, status: 200 })
}, 60_000)
