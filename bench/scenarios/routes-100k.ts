// Route lookup cost as the table grows: the same GET to a route in the middle of a 10-route
// and of a 100 000-route table (distinct host and path prefix each). A compiled table keeps
// the two rows level. The route sets have no catch-all, so a lookup that misses shows up as
// non-2xx (404 no_route) instead of silently reaching the upstream anyway.
import { hostRoute, routeCount } from '../targets/gateway.js'
import { DEFAULT_SPEC, type RouteSet } from '../targets/target.js'
import { measureTargets } from './measure-targets.js'
import type { ResultRow, Scenario, ScenarioContext, ScenarioOutput } from './scenario.js'

const SETS: readonly { readonly routes: RouteSet; readonly variant: string }[] = [
  { routes: 'hosts-10', variant: '10 routes' },
  { routes: 'hosts-100k', variant: '100k routes' },
]

export const routes100k: Scenario = {
  name: 'routes-100k',
  title: 'GET to the middle route of a 10-route vs a 100k-route gateway config (gateway only)',
  async run(ctx: ScenarioContext): Promise<ScenarioOutput> {
    const rows: ResultRow[] = []
    for (const set of SETS) {
      const { host, path } = hostRoute(Math.floor(routeCount(set.routes) / 2))
      rows.push(...await measureTargets(ctx, ['gateway'], { ...DEFAULT_SPEC, routes: set.routes }, set.variant, (target, seconds) => ctx.httpLoader.run({
        url: `${target.httpUrl}${path}/project?x=1`,
        method: 'GET',
        headers: { host },
        connections: ctx.options.connections,
        seconds,
        newConnectionPerRequest: false,
      })))
    }
    return {
      rows,
      notes: [`loader: ${ctx.httpLoader.name}, ${ctx.options.connections} connections; routes are h{i}.bench.test + /p{i}; the middle one is requested`],
      ratios: [{ label: '100k/10 routes', numerator: { target: 'gateway', variant: '100k routes' }, denominator: { target: 'gateway', variant: '10 routes' } }],
    }
  },
}
