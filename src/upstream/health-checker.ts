// Active HTTP health checks (config `upstreams.<name>.healthCheck`): every intervalMs, each
// target gets a GET of `path`; the expected status counts as a success, anything else
// (another status, a refused connection, a timeout) as a failure. Failures and successes feed
// the same counters as passive health, so `maxFails` checks in a row take a target out and
// one success brings it back.

import http from 'node:http'
import type { HealthCheckConfig } from '../config/types.js'
import type { Target } from './target.js'

export interface CheckedGroup {
  readonly name: string
  readonly check: HealthCheckConfig
  readonly targets: readonly Target[]
}

export class HealthChecker {
  private readonly timers: NodeJS.Timeout[] = []
  private readonly inflight = new Set<http.ClientRequest>()
  private stopped = false

  constructor(private readonly groups: readonly CheckedGroup[]) {}

  start(): void {
    for (const group of this.groups) {
      const interval = group.check.intervalMs ?? 5000
      for (const target of group.targets) {
        const run = (): void => this.probe(target, group.check)
        run()
        const timer = setInterval(run, interval)
        timer.unref()
        this.timers.push(timer)
      }
    }
  }

  private probe(target: Target, check: HealthCheckConfig): void {
    if (this.stopped) return
    const expect = check.expectStatus ?? 200
    let settled = false
    const done = (ok: boolean, why: string): void => {
      if (settled) return
      settled = true
      this.inflight.delete(req)
      req.destroy()
      if (ok) target.markUp()
      else target.markFailed(`health check: ${why}`)
    }
    const req = http.request({
      host: target.host,
      port: target.port,
      path: check.path,
      method: 'GET',
      agent: false,
      timeout: check.timeoutMs ?? 2000,
      headers: { host: target.key, 'user-agent': 'workspace-gateway-health-check', connection: 'close' },
    }, (res) => {
      res.resume()
      done(res.statusCode === expect, `status ${res.statusCode}, expected ${expect}`)
    })
    this.inflight.add(req)
    req.on('timeout', () => done(false, 'timed out'))
    req.on('error', (err: NodeJS.ErrnoException) => done(false, err.code ?? err.message))
    req.end()
  }

  stop(): void {
    this.stopped = true
    for (const t of this.timers.splice(0)) clearInterval(t)
    for (const req of this.inflight) req.destroy()
    this.inflight.clear()
  }
}
