// The gateway under test: `node dist/cli.js start --config <generated JSON>`, ready when the
// admin listener's /readyz answers 200. Until dist/cli.js exists its rows are skipped.
import { existsSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { request } from 'node:http'
import { join } from 'node:path'
import { logTail, spawnTracked, stopChild } from '../children.js'
import { freePort, waitForOk } from '../net-wait.js'
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

/** A request to a gateway's admin API with its token: the status and the body. */
export function adminRequest(admin: { readonly url: string; readonly token: string }, method: string, path: string, json?: unknown): Promise<{ status: number; body: string }> {
  const body = json === undefined ? '' : JSON.stringify(json)
  const headers: Record<string, string | number> = { authorization: `Bearer ${admin.token}` }
  if (json !== undefined) Object.assign(headers, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
  return new Promise((resolve, reject) => {
    const req = request(`${admin.url}${path}`, { method, headers, agent: false, timeout: 30_000 }, (res) => {
      let text = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => (text += chunk))
      res.once('end', () => resolve({ status: res.statusCode ?? 0, body: text }))
      res.once('error', reject)
    })
    req.once('timeout', () => req.destroy(new Error(`admin API: no answer to ${method} ${path} in 30 s`)))
    req.once('error', reject)
    req.end(body)
  })
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
    const accessLogPath = join(env.workDir, `gateway-${n}-access.log`)
    const file = join(env.workDir, `gateway-${n}.json`)
    await writeFile(file, JSON.stringify(config))
    const child = spawnTracked('gateway', process.execPath, [gatewayCli, 'start', '--config', file], join(env.workDir, `gateway-${n}.log`), { cwd: repoRoot, nofile: env.nofile })
    const admin = { url: `http://127.0.0.1:${adminPort}`, token: ADMIN_TOKEN }
    try {
      const deadlineMs = spec.routes === 'hosts-100k' ? 120_000 : 30_000
      await waitForOk(`${admin.url}/readyz`, { deadlineMs, exited: child.exited, what: 'gateway' })
    } catch (err) {
      await stopChild(child)
      throw new Error(`${(err as Error).message}\n${logTail(child)}`)
    }
    return {
      name: 'gateway',
      httpUrl: `http://127.0.0.1:${httpPort}`,
      httpsUrl: `https://127.0.0.1:${httpsPort}`,
      pid: child.pid,
      admin,
      async setAccessLog(on: boolean): Promise<void> {
        await writeFile(file, JSON.stringify({ ...config, accessLog: { enabled: on, path: accessLogPath } }))
        const { status, body } = await adminRequest(admin, 'POST', '/reload')
        if (status !== 200) throw new Error(`reload to turn the access log ${on ? 'on' : 'off'} answered ${status}: ${body}`)
      },
      stop: () => stopChild(child),
    }
  },
}
