// Workspace path routes (`/{port}_{host}/...`) resolved through the embedded registry (and
// its route cache) against a static route, on the same gateway. The server entry is put
// through the admin API first.
import { adminRequest } from '../targets/gateway.js'
import type { RunningTarget } from '../targets/target.js'
import { DEFAULT_SPEC } from '../targets/target.js'
import { indent, measureTargets } from './measure-targets.js'
import type { ResultRow, Scenario, ScenarioContext, ScenarioOutput } from './scenario.js'

const KEY = '32770_node1'

async function putServer(target: RunningTarget, upstreamPort: number): Promise<number> {
  const { status } = await adminRequest(target.admin!, 'PUT', `/servers/${KEY}`, { key: KEY, target: `127.0.0.1:${upstreamPort}` })
  return status
}

export const workspaceRoutes: Scenario = {
  name: 'workspace-routes',
  title: `GET via a workspace path route (/${KEY}/..., embedded registry) vs a static route (gateway only)`,
  async run(ctx: ScenarioContext): Promise<ScenarioOutput> {
    const notes = [`loader: ${ctx.httpLoader.name}, ${ctx.options.connections} connections`]
    if (!ctx.selected(['gateway']).length) return { rows: [], notes }
    const acquired = await ctx.pool.acquire('gateway', DEFAULT_SPEC)
    if (!acquired.ok) {
      ctx.log(`  gateway: skipped: ${indent(acquired.reason)}`)
      return { rows: [{ target: 'gateway', variant: '', measurement: null, skipped: acquired.reason }], notes }
    }
    const status = await putServer(acquired.target, ctx.upstreamHttpPort).catch((err: Error) => err.message)
    if (status !== 200 && status !== 201 && status !== 204) {
      const reason = typeof status === 'number' ? `PUT /servers/${KEY} answered ${status}` : `PUT /servers/${KEY} failed: ${status}`
      ctx.log(`  gateway: skipped: ${reason}`)
      return { rows: [{ target: 'gateway', variant: '', measurement: null, skipped: reason }], notes }
    }
    const rows: ResultRow[] = []
    const paths = [
      { variant: 'static', path: '/api/project?token=bench' },
      { variant: 'workspace', path: `/${KEY}/api/project?token=bench` },
    ]
    for (const { variant, path } of paths) {
      rows.push(...await measureTargets(ctx, ['gateway'], DEFAULT_SPEC, variant, (target, seconds) => ctx.httpLoader.run({
        url: `${target.httpUrl}${path}`,
        method: 'GET',
        connections: ctx.options.connections,
        seconds,
        newConnectionPerRequest: false,
      })))
    }
    return {
      rows,
      notes,
      ratios: [{ label: 'workspace/static', numerator: { target: 'gateway', variant: 'workspace' }, denominator: { target: 'gateway', variant: 'static' } }],
    }
  },
}
