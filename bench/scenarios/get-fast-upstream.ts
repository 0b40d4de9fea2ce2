// get-keepalive's load (same request, loader and connections) sent to nginx instead of the
// Node upstream. The Node upstream caps every row near 40k req/s on two cores, which hides
// how far apart the proxies are; nginx answering from its config leaves the proxy as the
// limit. The goal reads off this table: the gateway at >= 50% of HAProxy's req/s and
// >= 3x http-proxy's. http-proxy has two rows: the fair keep-alive setup every scenario uses,
// and the package as it comes (http-proxy-server.ts says what differs).
import { DEFAULT_SPEC, type TargetName, type TargetSpec } from '../targets/target.js'
import { nginxUnavailable, startNginx } from '../upstream/nginx.js'
import { GET_KEEPALIVE } from './get-keepalive.js'
import { httpLoad } from './http-scenario.js'
import { indent, measureTargets } from './measure-targets.js'
import type { ResultRow, Scenario, ScenarioContext, ScenarioOutput } from './scenario.js'

const DEFAULT_AGENT = 'default (no agent)'

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
      const rows: ResultRow[] = []
      for (const step of STEPS) {
        rows.push(...await measureTargets(ctx, step.targets, { ...DEFAULT_SPEC, ...step.spec, upstreamPort: nginx.httpPort }, step.variant, measure))
      }
      return {
        rows,
        notes: [...notes, ...NOTES],
        // gateway/haproxy and gateway/http-proxy come by themselves (same variant ""); the
        // default http-proxy row has a variant of its own, so its ratio is asked for here.
        ratios: [{ label: 'gateway/http-proxy (default)', numerator: { target: 'gateway', variant: '' }, denominator: { target: 'http-proxy', variant: DEFAULT_AGENT } }],
      }
    } finally {
      await nginx.stop()
    }
  },
}
