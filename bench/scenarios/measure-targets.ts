// The loop every scenario shares: for each target, get a running instance from the pool,
// warm it up with the same load, measure, and turn any failure into a skipped row so one
// broken target never takes the other rows down.
import type { Measurement } from '../loaders/measurement.js'
import type { RunningTarget, TargetName, TargetSpec } from '../targets/target.js'
import type { ResultRow, ScenarioContext } from './scenario.js'

export type Measure = (target: RunningTarget, seconds: number) => Promise<Measurement>

export function describe(m: Measurement): string {
  const rate = `${Math.round(m.value).toLocaleString('en-US')} ${m.unit}`
  const latency = m.p50Ms === null ? '' : `, p50 ${m.p50Ms.toFixed(2)} ms, p99 ${(m.p99Ms ?? 0).toFixed(2)} ms`
  const bad = m.errors + m.non2xx > 0 ? `, ${m.errors} errors, ${m.non2xx} non-2xx` : ''
  return rate + latency + bad
}

/** A multi-line reason (a child's log tail) indented under its progress line. */
export function indent(text: string): string {
  return text.trimEnd().split('\n').join('\n      ')
}

export async function measureTargets(ctx: ScenarioContext, targets: readonly TargetName[], spec: TargetSpec, variant: string, measure: Measure): Promise<ResultRow[]> {
  const rows: ResultRow[] = []
  const label = variant ? `${variant} ` : ''
  for (const name of ctx.selected(targets)) {
    const acquired = await ctx.pool.acquire(name, spec)
    if (!acquired.ok) {
      ctx.log(`  ${label}${name}: skipped: ${indent(acquired.reason)}`)
      rows.push({ target: name, variant, measurement: null, skipped: acquired.reason })
      continue
    }
    try {
      const warm = ctx.warmupFor(acquired.firstUse)
      if (warm > 0) await measure(acquired.target, warm)
      const m = await measure(acquired.target, ctx.options.seconds)
      ctx.log(`  ${label}${name}: ${describe(m)}`)
      rows.push({ target: name, variant, measurement: m })
    } catch (err) {
      const reason = `failed: ${(err as Error).message}`
      ctx.log(`  ${label}${name}: ${indent(reason)}`)
      rows.push({ target: name, variant, measurement: null, skipped: reason })
    }
  }
  return rows
}
