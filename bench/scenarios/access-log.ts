// What the access log costs: the same keep-alive GETs through a gateway with the access log
// off and with it on (JSON lines to a file). Issue 4 asks for under 5% of throughput.
import { DEFAULT_SPEC } from '../targets/target.js'
import { measureTargets } from './measure-targets.js'
import type { ResultRow, Scenario, ScenarioContext, ScenarioOutput } from './scenario.js'

export const accessLog: Scenario = {
  name: 'access-log',
  title: 'small GET keep-alive through the gateway with the access log off, then on (gateway only)',
  async run(ctx: ScenarioContext): Promise<ScenarioOutput> {
    const rows: ResultRow[] = []
    for (const [variant, on] of [['log off', false], ['log on', true]] as const) {
      rows.push(...await measureTargets(ctx, ['gateway'], { ...DEFAULT_SPEC, fresh: true, accessLog: on }, variant, (target, seconds) => ctx.httpLoader.run({
        url: `${target.httpUrl}/`,
        method: 'GET',
        connections: ctx.options.connections,
        seconds,
        newConnectionPerRequest: false,
      })))
    }
    return {
      rows,
      notes: [`loader: ${ctx.httpLoader.name}, ${ctx.options.connections} connections; "log on" writes one JSON line per request to a file`],
      ratios: [{ label: 'log on/log off', numerator: { target: 'gateway', variant: 'log on' }, denominator: { target: 'gateway', variant: 'log off' } }],
    }
  },
}
