// get-keepalive's load (same request, loader and connections) sent to nginx instead of the
// Node upstream. The Node upstream caps every row near 40k req/s on two cores, which hides
// how far apart the proxies are; nginx answering from its config leaves the proxy as the
// limit. The goal reads off this table: the gateway at >= 50% of HAProxy's req/s and
// >= 3x http-proxy's. http-proxy has two rows: the fair keep-alive setup every scenario uses,
// and the package as it comes (http-proxy-server.ts says what differs).
//
// The goal's figures decide an issue, and the host is shared: a burst on it during one
// target's 10 s can move a ratio by a third. So every target is measured in turn, ROUNDS
// times, each row is that target's median round, and the per-round ratios are printed too.
import type { Measurement } from '../loaders/measurement.js'
import { median } from '../median.js'
import { DEFAULT_SPEC, type TargetName, type TargetSpec } from '../targets/target.js'
import { nginxUnavailable, startNginx } from '../upstream/nginx.js'
import { GET_KEEPALIVE } from './get-keepalive.js'
import { httpLoad } from './http-scenario.js'
import { indent, measureTargets } from './measure-targets.js'
import type { ResultRow, Scenario, ScenarioContext, ScenarioOutput } from './scenario.js'

const DEFAULT_AGENT = 'default (no agent)'
/** Rounds of every target in turn (one with --quick). */
const ROUNDS = 3

interface Step {
  readonly targets: readonly TargetName[]
  readonly variant: string
  readonly spec?: Partial<TargetSpec>
}

/** The table's rows in order, one measureTargets call each. */
const STEPS: readonly Step[] = [
  { targets: ['direct', 'http-proxy'], variant: '' },
  { targets: ['http-proxy'], variant: DEFAULT_AGENT, spec: { httpProxyAgent: 'default' } },
  { targets: ['haproxy', 'gateway'], variant: '' },
]

const NOTES = [
  'upstream: nginx, one worker, `return 200 "hello world\\n"`, no access log; direct is nginx alone, the ceiling of loader plus upstream',
  `http-proxy ${DEFAULT_AGENT}: a new upstream connection per request with Connection: close, which it copies back, so every client connection carries one request too`,
  'goal (the issue): gateway/haproxy >= 0.50, gateway/http-proxy >= 3',
]

function skipAll(ctx: ScenarioContext, reason: string): ResultRow[] {
  ctx.log(`  skipped: ${indent(reason)}`)
  return STEPS.flatMap((step) => ctx.selected(step.targets).map((target): ResultRow => ({ target, variant: step.variant, measurement: null, skipped: reason })))
}

export const getFastUpstream: Scenario = {
  name: 'get-fast-upstream',
  title: 'small GET ("hello world\\n"), keep-alive connections, to an nginx upstream instead of the Node one',
  async run(ctx: ScenarioContext): Promise<ScenarioOutput> {
    const { measure, notes } = httpLoad(ctx, GET_KEEPALIVE)
    const unavailable = nginxUnavailable()
    if (unavailable) return { rows: skipAll(ctx, unavailable), notes }
    const nginx = await startNginx(ctx.workDir, ctx.options.connections).catch((err: Error) => `nginx failed to start: ${err.message}`)
    if (typeof nginx === 'string') return { rows: skipAll(ctx, nginx), notes }
    try {
      const rounds = ctx.options.quick ? 1 : ROUNDS
      const byRound: ResultRow[][] = []
      for (let r = 0; r < rounds; r++) {
        if (rounds > 1) ctx.log(`  round ${r + 1} of ${rounds}`)
        const rows: ResultRow[] = []
        for (const step of STEPS) {
          rows.push(...await measureTargets(ctx, step.targets, { ...DEFAULT_SPEC, ...step.spec, upstreamPort: nginx.httpPort }, step.variant, measure))
        }
        byRound.push(rows)
      }
      const roundNotes = rounds > 1 ? [
        `${rounds} rounds, every target in turn in each; a row is the target's median round`,
        ...perRoundRatios(byRound),
      ] : []
      return {
        rows: byRound[0].map((_, i) => medianRow(byRound.map((rows) => rows[i]))),
        notes: [...notes, ...NOTES, ...roundNotes],
        // gateway/haproxy and gateway/http-proxy come by themselves (same variant ""); the
        // default http-proxy row has a variant of its own, so its ratio is asked for here.
        ratios: [{ label: 'gateway/http-proxy (default)', numerator: { target: 'gateway', variant: '' }, denominator: { target: 'http-proxy', variant: DEFAULT_AGENT } }],
      }
    } finally {
      await nginx.stop()
    }
  },
}

/** One target's rounds as one row: the median round, or skipped when any round was. */
function medianRow(rounds: readonly ResultRow[]): ResultRow {
  const skipped = rounds.find((row) => row.measurement === null)
  if (skipped !== undefined) return skipped
  const byValue = [...rounds].sort((a, b) => a.measurement!.value - b.measurement!.value)
  return byValue[(byValue.length - 1) >> 1]
}

/** "gateway/haproxy per round: 0.71, 0.77, 0.80 (median 0.77)", for each reference measured in every round. */
function perRoundRatios(byRound: readonly ResultRow[][]): string[] {
  const value = (rows: readonly ResultRow[], target: TargetName, variant: string): Measurement | null =>
    rows.find((row) => row.target === target && row.variant === variant)?.measurement ?? null
  const lines: string[] = []
  for (const [target, variant, label] of [['haproxy', '', 'haproxy'], ['http-proxy', '', 'http-proxy'], ['http-proxy', DEFAULT_AGENT, 'http-proxy (default)']] as const) {
    const ratios = byRound.map((rows) => {
      const gw = value(rows, 'gateway', '')
      const ref = value(rows, target, variant)
      return gw === null || ref === null || ref.value === 0 ? null : gw.value / ref.value
    })
    if (ratios.some((x) => x === null)) continue
    lines.push(`gateway/${label} per round: ${ratios.map((x) => x!.toFixed(2)).join(', ')} (median ${median(ratios as number[]).toFixed(2)})`)
  }
  return lines
}
