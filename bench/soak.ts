// `npm run soak -- --minutes 5`: the built gateway (`node dist/cli.js start --config <temp>`)
// in one child process, the bench upstream in another, and mixed HTTP and websocket load with
// random client aborts from this process, while the upstream is restarted a few times. The
// gateway's open descriptors, RSS and heap are taken after a warm-up and again after the load
// has stopped and connections have drained; the run passes only when no socket leaked, RSS
// grew under 10%, and every line of the access log (on, to a file) is whole. Only 127.0.0.1 is used; the load is a fixed number of closed-loop
// workers, so it is bounded whatever the machine.
import { readFileSync, rmSync } from 'node:fs'
import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { parseArgs } from 'node:util'
import { makeCertificates } from './certs.js'
import { atExit, installCleanupHandlers, logTail, spawnTracked, stopAllChildren, stopChild, type TrackedChild } from './children.js'
import { fileLimits } from './file-limit.js'
import { freePort, getStatus } from './net-wait.js'
import { gatewayCli, repoRoot } from './paths.js'
import { GatewayProbe, type ProcessFigures } from './soak/gateway-probe.js'
import { SoakLoad, type LoadCounts, type LoadShape } from './soak/soak-load.js'
import { startUpstream, type Upstream } from './upstream/upstream.js'

/** Descriptors the gateway may legitimately hold beyond the start (a pooled connection or two). */
const FD_TOLERANCE = 4
const RSS_GROWTH_LIMIT = 0.10
const UPSTREAM_RESTARTS = 3
/** How long the upstream stays down at each restart. */
const UPSTREAM_DOWN_MS = 1000
const ADMIN_TOKEN = 'soak-token'
/** Pooled upstream connections idle out after this; also how long "quiet" must last. */
const UPSTREAM_IDLE_MS = 1000
const SHAPE: LoadShape = { keepAlive: 8, newConnection: 4, websocket: 4, aborting: 2 }

const USAGE = `npm run soak -- [--minutes N]

  --minutes N   minutes of load after the warm-up (default 5; fractions allowed, e.g. 0.5)
  --help

Passes (exit 0) when the gateway survived, its open descriptors are back within
+${FD_TOLERANCE} of the start and its RSS grew under ${RSS_GROWTH_LIMIT * 100}%; prints PASS or FAIL with the figures.`

const log = (line: string): void => {
  process.stdout.write(`${line}\n`)
}

function parseOptions(argv: string[]): { minutes: number; help: boolean } {
  const { values } = parseArgs({ args: argv, strict: true, options: { minutes: { type: 'string' }, help: { type: 'boolean', default: false } } })
  const minutes = values.minutes === undefined ? 5 : Number(values.minutes)
  if (!Number.isFinite(minutes) || minutes <= 0) throw new Error(`--minutes wants a positive number, got "${values.minutes}"`)
  return { minutes, help: values.help === true }
}

const mb = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(1)} MB`

function describe(f: ProcessFigures): string {
  const heap = f.heapUsedBytes === null
    ? 'heap n/a'
    : `heap used ${mb(f.heapUsedBytes)} of ${f.heapTotalBytes === null ? '?' : mb(f.heapTotalBytes)}, external ${f.externalBytes === null ? '?' : mb(f.externalBytes)}`
  const open = f.openConnections === null ? '' : `, ${f.openConnections} client connection(s), ${f.openTunnels ?? '?'} tunnel(s) open`
  return `${f.fds} open descriptors, RSS ${mb(f.rssBytes)} (anon ${mb(f.rssAnonBytes)}, file ${mb(f.rssFileBytes)}), ${heap}${open}`
}

function describeCounts(c: LoadCounts): string[] {
  const table = (t: Record<string, number>): string => Object.entries(t).sort((a, b) => b[1] - a[1]).map(([k, n]) => `${k} x${n}`).join(', ') || 'none'
  return [
    `  http exchanges: ${c.http} (status: ${table(c.httpByStatus)}; errors: ${table(c.httpErrors)})`,
    `  websocket sessions completed: ${c.wsSessions} (errors: ${table(c.wsErrors)})`,
    `  abandoned exchanges: ${Object.values(c.aborts).reduce((a, b) => a + b, 0)} (${table(c.aborts)})`,
  ]
}

async function waitReady(adminUrl: string, child: TrackedChild): Promise<void> {
  let dead = false
  void child.exited.then(() => (dead = true))
  const deadline = Date.now() + 30_000
  for (;;) {
    if (dead) throw new Error(`the gateway exited before it was ready:\n${logTail(child)}`)
    if ((await getStatus(`${adminUrl}/readyz`)) === 200) return
    if (Date.now() > deadline) throw new Error(`the gateway was not ready after 30 s:\n${logTail(child)}`)
    await sleep(100)
  }
}

async function startUpstreamOn(workDir: string, certs: Awaited<ReturnType<typeof makeCertificates>>, nofile: number, port: number): Promise<Upstream> {
  // The old process's port may take a moment to be free again.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startUpstream(workDir, certs, nofile, port)
    } catch (err) {
      if (attempt >= 10) throw err
      await sleep(200)
    }
  }
}

/** Stops the upstream (SIGTERM), leaves it down for UPSTREAM_DOWN_MS, starts it again. */
async function restartUpstream(upstream: Upstream, start: () => Promise<Upstream>): Promise<Upstream> {
  await upstream.stop()
  await sleep(UPSTREAM_DOWN_MS)
  return start()
}

async function soak(minutes: number): Promise<number> {
  const workDir = await mkdtemp(join(tmpdir(), 'gateway-soak-'))
  atExit(() => rmSync(workDir, { recursive: true, force: true }))
  const limits = fileLimits()
  const certs = await makeCertificates(workDir)
  const upstreamPort = await freePort()
  let upstream = await startUpstreamOn(workDir, certs, limits.hard, upstreamPort)
  const [httpPort, adminPort] = [await freePort(), await freePort()]
  const config = {
    listeners: [{ name: 'http', port: httpPort, host: '127.0.0.1' }],
    upstreams: { up: { targets: [`127.0.0.1:${upstreamPort}`], maxFails: 3, cooldownMs: 500 } },
    routes: [{ id: 'all', pathPrefix: '/', upstream: 'up' }],
    admin: { host: '127.0.0.1', port: adminPort, token: ADMIN_TOKEN },
    stateFile: join(workDir, 'gateway-state.json'),
    timeouts: { upstreamIdleMs: UPSTREAM_IDLE_MS, responseMs: 10_000, keepAliveMs: 10_000 },
    accessLog: { enabled: true, path: join(workDir, 'access.log') },
  }
  const configFile = join(workDir, 'gateway.json')
  await writeFile(configFile, JSON.stringify(config, null, 2))
  const gateway = spawnTracked('gateway', process.execPath, [gatewayCli, 'start', '--config', configFile], join(workDir, 'gateway.log'), { cwd: repoRoot })
  const adminUrl = `http://127.0.0.1:${adminPort}`
  await waitReady(adminUrl, gateway)
  const probe = new GatewayProbe(gateway.pid, adminUrl, ADMIN_TOKEN)
  log(`gateway pid ${gateway.pid} on 127.0.0.1:${httpPort}; upstream on 127.0.0.1:${upstreamPort}; ${minutes} min of load`)
  log(`load: ${SHAPE.keepAlive} keep-alive + ${SHAPE.newConnection} new-connection HTTP workers, ${SHAPE.websocket} websocket workers, ${SHAPE.aborting} aborting workers`)

  // The warm-up runs the same mix, one upstream restart included, so that the start figures
  // already include what the error paths compile and allocate once.
  const warmupMs = Math.min(45_000, Math.max(20_000, minutes * 60_000 * 0.2))
  log(`warm-up: ${(warmupMs / 1000).toFixed(0)} s of the same load, one upstream restart`)
  const warmup = new SoakLoad(httpPort)
  warmup.start(SHAPE)
  await sleep(warmupMs / 2)
  upstream = await restartUpstream(upstream, () => startUpstreamOn(workDir, certs, limits.hard, upstreamPort))
  await sleep(warmupMs / 2)
  await warmup.stop()
  const start = await probe.settle(UPSTREAM_IDLE_MS + 1500, 30_000)
  log(`start (after warm-up, drained): ${describe(start)}`)

  const runMs = minutes * 60_000
  const load = new SoakLoad(httpPort)
  const t0 = Date.now()
  load.start(SHAPE)
  // A figure every tenth of the run (at least every 15 s): a leak climbs, a warm-up plateaus.
  const sampler = setInterval(() => {
    void probe.figures().then((f) => log(`  ${((Date.now() - t0) / 1000).toFixed(0)} s: ${describe(f)}`))
  }, Math.max(15_000, runMs / 10))
  let restarts = 0
  for (let i = 1; i <= UPSTREAM_RESTARTS; i++) {
    const at = t0 + (runMs * i) / (UPSTREAM_RESTARTS + 1)
    await sleep(Math.max(0, at - Date.now()))
    upstream = await restartUpstream(upstream, () => startUpstreamOn(workDir, certs, limits.hard, upstreamPort))
    restarts++
    const f = await probe.figures()
    log(`  ${((Date.now() - t0) / 1000).toFixed(0)} s: upstream restarted (${restarts}/${UPSTREAM_RESTARTS}); gateway now ${describe(f)}`)
  }
  await sleep(Math.max(0, t0 + runMs - Date.now()))
  clearInterval(sampler)
  await load.stop()
  log(`load stopped after ${((Date.now() - t0) / 1000).toFixed(0)} s:`)
  for (const line of describeCounts(load.counts)) log(line)
  const end = await probe.settle(UPSTREAM_IDLE_MS + 1500, 60_000)
  log(`end (after the load, drained): ${describe(end)}`)

  const alive = gateway.process.exitCode === null && gateway.process.signalCode === null
  // A few tries over 3 s: one request may be a target's trial after a cool-down.
  let serving = false
  for (let i = 0; i < 6 && alive && !serving; i++) {
    serving = (await getStatus(`http://127.0.0.1:${httpPort}/`)) === 200
    if (!serving) await sleep(500)
  }
  const fdGrowth = end.fds - start.fds
  const rssGrowth = (end.rssBytes - start.rssBytes) / start.rssBytes
  const checks = [
    { ok: alive, text: alive ? 'the gateway process survived' : `the gateway process exited:\n${logTail(gateway)}` },
    { ok: serving, text: serving ? 'the gateway serves 200 after the upstream restarts' : 'the gateway does not serve 200 after the load (3 s of tries)' },
    { ok: fdGrowth <= FD_TOLERANCE, text: `open descriptors ${start.fds} -> ${end.fds} (${fdGrowth >= 0 ? '+' : ''}${fdGrowth}; tolerance +${FD_TOLERANCE})` },
    { ok: rssGrowth < RSS_GROWTH_LIMIT, text: `RSS ${mb(start.rssBytes)} -> ${mb(end.rssBytes)} (${(rssGrowth * 100).toFixed(1)}%; limit ${RSS_GROWTH_LIMIT * 100}%)` },
  ]
  // Stopped (SIGTERM: the access log writes what it holds), then every line must be whole.
  await stopChild(gateway)
  const logCheck = checkAccessLog(config.accessLog.path, load.counts.http)
  checks.push(logCheck)
  const heapNote = start.heapUsedBytes === null || end.heapUsedBytes === null
    ? 'heap: not reported by the gateway (no nodejs_heap_used_bytes in /metrics); RSS only'
    : `heap used ${mb(start.heapUsedBytes)} -> ${mb(end.heapUsedBytes)} (reported, not judged)`
  log('')
  for (const c of checks) log(`${c.ok ? 'ok  ' : 'FAIL'} ${c.text}`)
  log(`     ${heapNote}`)
  const pass = checks.every((c) => c.ok)
  log(`\nsoak ${pass ? 'PASS' : 'FAIL'}: ${minutes} min, ${restarts} upstream restarts, ${load.counts.http} HTTP exchanges, ${load.counts.wsSessions} websocket sessions`)
  await upstream.stop()
  return pass ? 0 : 1
}

/** Every access-log line parses as JSON with a status; at least one line per HTTP exchange of the run. */
function checkAccessLog(path: string, exchanges: number): { ok: boolean; text: string } {
  const lines = readFileSync(path, 'utf8').split('\n')
  const last = lines.pop()
  let bad = last === '' ? 0 : 1 // the file must end with a newline
  for (const line of lines) {
    try {
      if (typeof (JSON.parse(line) as { status?: unknown }).status !== 'number') bad++
    } catch {
      bad++
    }
  }
  const ok = bad === 0 && lines.length >= exchanges
  return { ok, text: `access log: ${lines.length} lines (${exchanges} HTTP exchanges in the run, plus the warm-up, websockets and aborts), ${bad} not whole JSON` }
}

async function main(): Promise<number> {
  const options = parseOptions(process.argv.slice(2))
  if (options.help) {
    log(USAGE)
    return 0
  }
  installCleanupHandlers()
  return soak(options.minutes)
}

main().then(
  (code) => {
    process.exitCode = code
  },
  async (err: Error) => {
    process.stderr.write(`soak: ${err.message}\n`)
    await stopAllChildren()
    process.exitCode = 1
  },
)
