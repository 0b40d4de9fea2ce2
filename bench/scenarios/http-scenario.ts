// Builds the plain HTTP scenarios (get-keepalive, get-new-conn, post-64k, https-keepalive):
// the same request against every target, with the loader the scenario calls for. httpLoad
// lends the same load to a scenario that needs more than that (get-fast-upstream).
import type { HttpLoad } from '../loaders/measurement.js'
import { DEFAULT_SPEC, TARGET_NAMES } from '../targets/target.js'
import { measureTargets, type Measure } from './measure-targets.js'
import type { Scenario, ScenarioContext, ScenarioOutput } from './scenario.js'

export interface HttpScenarioDef {
  readonly name: string
  readonly title: string
  readonly https: boolean
  readonly newConnectionPerRequest: boolean
  readonly method: HttpLoad['method']
  readonly bodyBytes?: number
  /** See ScenarioOutput.directIsCeiling; default true. */
  readonly directIsCeiling?: boolean
  readonly notes?: readonly string[]
}

/** A definition's request sent to one target by the loader it calls for, and the notes its table needs. */
export function httpLoad(ctx: ScenarioContext, def: HttpScenarioDef): { readonly measure: Measure; readonly notes: string[] } {
  const body = def.bodyBytes === undefined ? undefined : Buffer.alloc(def.bodyBytes, 'x')
  const loader = def.newConnectionPerRequest ? ctx.newConnectionLoader : ctx.httpLoader
  const measure: Measure = (target, seconds) => loader.run({
    url: `${def.https ? target.httpsUrl : target.httpUrl}/hello`,
    method: def.method,
    body,
    connections: ctx.options.connections,
    seconds,
    newConnectionPerRequest: def.newConnectionPerRequest,
  })
  const notes = [`loader: ${loader.name}, ${ctx.options.connections} connections`, ...(def.notes ?? [])]
  if (def.newConnectionPerRequest && loader.name !== 'wrk') {
    notes.push('wrk not used: a Node socket loop opened the connections, so figures are lower than wrk would show')
  }
  return { measure, notes }
}

export function httpScenario(def: HttpScenarioDef): Scenario {
  return {
    name: def.name,
    title: def.title,
    async run(ctx: ScenarioContext): Promise<ScenarioOutput> {
      const { measure, notes } = httpLoad(ctx, def)
      const rows = await measureTargets(ctx, TARGET_NAMES, { ...DEFAULT_SPEC, usesTls: def.https }, '', measure)
      return { rows, notes, directIsCeiling: def.directIsCeiling ?? true }
    },
  }
}
