// The gateway under test: `node dist/cli.js start --config <generated JSON>`, ready when the
// admin listener's /readyz answers 200. Until dist/cli.js exists its rows are skipped.
import { existsSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { logTail, spawnTracked, stopChild } from '../children.js'
import { setTimeout as sleep } from 'node:timers/promises'
import { canConnect, freePort, getStatus } from '../net-wait.js'
import { gatewayCli, repoRoot } from '../paths.js'
import { upstreamPortOf, type RouteSet, type RunningTarget, type TargetDriver, type TargetEnv, type TargetSpec } from './target.js'

export const ADMIN_TOKEN = 'bench-token'

interface BenchRoute {
  readonly id: string
  readonly host?: string
  readonly pathPrefix: string
  readonly upstream: string
}

/** Host and path of host route `i` of the `hosts-*` route sets. */
export function hostRoute(i: number): { host: string; path: string } {
  return { host: `h${i}.bench.test`, path: `/p${i}` }
}

export function routeCount(routes: RouteSet): number {
  switch (routes) {
    case 'catch-all': return 0
    case 'hosts-10': return 10
    case 'hosts-100k': return 100_000
  }
}

function routesFor(set: RouteSet): BenchRoute[] {
  const routes: BenchRoute[] = []
  const n = routeCount(set)
  for (let i = 0; i < n; i++) {
    const { host, path } = hostRoute(i)
    routes.push({ id: `r${i}`, host, pathPrefix: path, upstream: 'up' })
  }
  routes.push({ id: 'all', pathPrefix: '/', upstream: 'up' })
  return routes
}

/** How long listeners must accept, with no admin listener at all, before that counts as ready. */
const NO_ADMIN_GRACE_MS = 2000

/**
 * Polls /readyz until 200. While the admin API is still being written, a gateway without an
 * admin listener (connection refused) whose front ports accept for NO_ADMIN_GRACE_MS counts
 * as ready too; the returned note says so.
 */
async function waitReady(adminUrl: string, ports: readonly number[], exited: Promise<unknown>, deadlineMs: number): Promise<string | undefined> {
  let dead = false
  void exited.then(() => {
    dead = true
  })
  const deadline = Date.now() + deadlineMs
  let acceptingSince = 0
  for (;;) {
    if (dead) throw new Error('gateway exited before it was ready')
    const status = await getStatus(`${adminUrl}/readyz`)
    if (status === 200) return undefined
    if (status === 0 && (await Promise.all(ports.map(canConnect))).every(Boolean)) {
      acceptingSince ||= Date.now()
      if (Date.now() - acceptingSince >= NO_ADMIN_GRACE_MS) return 'no admin listener (no /readyz): ready once its listeners accepted'
    } else {
      acceptingSince = 0
    }
    if (Date.now() > deadline) throw new Error(`gateway not ready after ${deadlineMs} ms (/readyz answered ${status || 'nothing'})`)
    await sleep(50)
  }
}

let started = 0

export const gatewayTarget: TargetDriver = {
  name: 'gateway',
  unavailable: () => (existsSync(gatewayCli) ? null : 'gateway not built (dist/cli.js missing): rows skipped'),
  async start(spec: TargetSpec, env: TargetEnv): Promise<RunningTarget> {
    const n = ++started
    const [httpPort, httpsPort, adminPort] = [await freePort(), await freePort(), await freePort()]
    const cert = env.certs[spec.cert]
    const config: Record<string, unknown> = {
      listeners: [
        { name: 'http', port: httpPort, host: '127.0.0.1' },
        { name: 'https', port: httpsPort, host: '127.0.0.1', tls: { cert: cert.cert, key: cert.key } },
      ],
      upstreams: { up: { targets: [`127.0.0.1:${upstreamPortOf(spec, env)}`] } },
      routes: routesFor(spec.routes),
      admin: { host: '127.0.0.1', port: adminPort, token: ADMIN_TOKEN },
      stateFile: join(env.workDir, `gateway-${n}-state.json`),
    }
    // Only when asked: the key is the contract's `workers`, and unknown keys are rejected.
    if (env.workers !== null) config.workers = env.workers
    if (spec.accessLog === true) config.accessLog = { enabled: true, path: join(env.workDir, `gateway-${n}-access.log`) }
    const file = join(env.workDir, `gateway-${n}.json`)
    await writeFile(file, JSON.stringify(config))
    const child = spawnTracked('gateway', process.execPath, [gatewayCli, 'start', '--config', file], join(env.workDir, `gateway-${n}.log`), { cwd: repoRoot, nofile: env.nofile })
    const adminUrl = `http://127.0.0.1:${adminPort}`
    let note: string | undefined
    try {
      const deadlineMs = spec.routes === 'hosts-100k' ? 120_000 : 30_000
      note = await waitReady(adminUrl, [httpPort, httpsPort], child.exited, deadlineMs)
    } catch (err) {
      await stopChild(child)
      throw new Error(`${(err as Error).message}\n${logTail(child)}`)
    }
    return {
      name: 'gateway',
      httpUrl: `http://127.0.0.1:${httpPort}`,
      httpsUrl: `https://127.0.0.1:${httpsPort}`,
      pid: child.pid,
      admin: { url: adminUrl, token: ADMIN_TOKEN },
      note,
      stop: () => stopChild(child),
    }
  },
}
