// Keeps at most one running instance per target and reuses it while scenarios ask for a
// compatible spec, so a run starts each proxy a few times rather than once per scenario. A
// start that failed is remembered: the gateway's rows are skipped at once, not retried with a
// full readiness deadline in every scenario.
import { direct } from './direct.js'
import { gatewayTarget } from './gateway.js'
import { haproxyTarget } from './haproxy.js'
import { httpProxyTarget } from './http-proxy.js'
import { upstreamPortOf, type RunningTarget, type TargetDriver, type TargetEnv, type TargetName, type TargetSpec } from './target.js'

const DRIVERS: Readonly<Record<TargetName, TargetDriver>> = {
  direct,
  'http-proxy': httpProxyTarget,
  haproxy: haproxyTarget,
  gateway: gatewayTarget,
}

export type Acquired =
  | { readonly ok: true; readonly target: RunningTarget; readonly firstUse: boolean }
  | { readonly ok: false; readonly reason: string }

interface Current {
  readonly spec: TargetSpec
  readonly target: RunningTarget
}

function reusable(running: TargetSpec, wanted: TargetSpec, env: TargetEnv): boolean {
  return !running.fresh && !wanted.fresh && running.routes === wanted.routes &&
    (!wanted.usesTls || running.cert === wanted.cert) &&
    upstreamPortOf(running, env) === upstreamPortOf(wanted, env) &&
    (running.httpProxyAgent ?? 'keep-alive') === (wanted.httpProxyAgent ?? 'keep-alive')
}

/** For the "started" line: certificate, routes, and the upstream or agent a scenario chose. */
function describeSpec(spec: TargetSpec): string {
  const parts: string[] = [spec.cert, spec.routes]
  if (spec.upstreamPort !== undefined) parts.push(`upstream port ${spec.upstreamPort}`)
  if (spec.httpProxyAgent !== undefined) parts.push(`${spec.httpProxyAgent} agent`)
  return parts.join(', ')
}

/** Failures are remembered by what was started, not by who asked. */
function failureKey(name: TargetName, spec: TargetSpec): string {
  return `${name}:${spec.cert}/${spec.routes}`
}

export class TargetPool {
  private readonly current = new Map<TargetName, Current>()
  private readonly failures = new Map<string, string>()

  constructor(private readonly env: TargetEnv, private readonly log: (line: string) => void) {}

  async acquire(name: TargetName, spec: TargetSpec): Promise<Acquired> {
    const driver = DRIVERS[name]
    const unavailable = driver.unavailable()
    if (unavailable) return { ok: false, reason: unavailable }
    const failed = this.failures.get(failureKey(name, spec))
    if (failed) return { ok: false, reason: failed }
    const now = this.current.get(name)
    if (now && reusable(now.spec, spec, this.env)) return { ok: true, target: now.target, firstUse: false }
    if (now) {
      this.current.delete(name)
      await now.target.stop()
    }
    const t0 = Date.now()
    try {
      const target = await driver.start(spec, this.env)
      this.current.set(name, { spec, target })
      this.log(`  started ${name} (${describeSpec(spec)}) in ${Date.now() - t0} ms${target.note ? `: ${target.note}` : ''}`)
      return { ok: true, target, firstUse: true }
    } catch (err) {
      const reason = `${name} failed to start: ${(err as Error).message}`
      this.failures.set(failureKey(name, spec), reason)
      return { ok: false, reason }
    }
  }

  /**
   * An instance outside the pool, for scenarios that run two of one target at once (the
   * caller stops it; children.ts stops it too if the run dies first).
   */
  startSeparate(name: TargetName, spec: TargetSpec): Promise<RunningTarget> {
    return DRIVERS[name].start(spec, this.env)
  }

  async stopAll(): Promise<void> {
    const all = [...this.current.values()]
    this.current.clear()
    await Promise.all(all.map((c) => c.target.stop()))
  }
}
