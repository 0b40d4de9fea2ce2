// What the access log costs: the same keep-alive GETs through a gateway with the access log
// off and with it on (JSON lines to a file). Issue 4 asks for under 5% of throughput. On a
// shared 2-core machine req/s swings from run to run, so the scenario also reports the
// gateway's CPU time per request (utime + stime from /proc, all threads), which contention
// disturbs less: the log's cost is the difference of the two.
import { readFileSync } from 'node:fs'
import type { Measurement } from '../loaders/measurement.js'
import { DEFAULT_SPEC } from '../targets/target.js'
import { measureTargets } from './measure-targets.js'
import type { ResultRow, Scenario, ScenarioContext, ScenarioOutput } from './scenario.js'

/** CPU seconds used so far by a process (Linux clock ticks are 1/100 s). */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(fields[11]) + Number(fields[12])) / 100
}

export const accessLog: Scenario = {
  name: 'access-log',
  title: 'small GET keep-alive through the gateway with the access log off, then on (gateway only)',
  async run(ctx: ScenarioContext): Promise<ScenarioOutput> {
    const rows: ResultRow[] = []
    const cpu: Record<string, number> = {}
    for (const [variant, on] of [['log off', false], ['log on', true]] as const) {
      rows.push(...await measureTargets(ctx, ['gateway'], { ...DEFAULT_SPEC, fresh: true, accessLog: on }, variant, async (target, seconds): Promise<Measurement> => {
        const before = target.pid === null ? 0 : cpuSeconds(target.pid)
        const m = await ctx.httpLoader.run({ url: `${target.httpUrl}/`, method: 'GET', connections: ctx.options.connections, seconds, newConnectionPerRequest: false })
        if (target.pid !== null && m.total > 0) cpu[variant] = ((cpuSeconds(target.pid) - before) / m.total) * 1e6
        return m
      }))
    }
    const notes = [`loader: ${ctx.httpLoader.name}, ${ctx.options.connections} connections; "log on" writes one JSON line per request to a file`]
    if (cpu['log off'] !== undefined && cpu['log on'] !== undefined) {
      notes.push(`gateway CPU per request: log off ${cpu['log off'].toFixed(1)} us, log on ${cpu['log on'].toFixed(1)} us (+${((cpu['log on'] / cpu['log off'] - 1) * 100).toFixed(1)}%)`)
    }
    return {
      rows,
      notes,
      ratios: [{ label: 'log on/log off', numerator: { target: 'gateway', variant: 'log on' }, denominator: { target: 'gateway', variant: 'log off' } }],
    }
  },
}
