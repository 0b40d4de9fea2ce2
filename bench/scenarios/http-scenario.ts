// Builds the plain HTTP scenarios (get-keepalive, get-new-conn, post-64k, https-keepalive):
// the same request against every target, with the loader the scenario calls for.
import type { HttpLoad } from '../loaders/measurement.js'
import { DEFAULT_SPEC, TARGET_NAMES } from '../targets/target.js'
import { measureTargets } from './measure-targets.js'
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

export function httpScenario(def: HttpScenarioDef): Scenario {
  const body = def.bodyBytes === undefined ? undefined : Buffer.alloc(def.bodyBytes, 'x')
  return {
    name: def.name,
    title: def.title,
    async run(ctx: ScenarioContext): Promise<ScenarioOutput> {
      const loader = def.newConnectionPerRequest ? ctx.newConnectionLoader : ctx.httpLoader
      const rows = await measureTargets(ctx, TARGET_NAMES, { ...DEFAULT_SPEC, usesTls: def.https }, '', (target, seconds) => loader.run({
        url: `${def.https ? target.httpsUrl : target.httpUrl}/hello`,
        method: def.method,
        body,
        connections: ctx.options.connections,
        seconds,
        newConnectionPerRequest: def.newConnectionPerRequest,
      }))
      const notes = [`loader: ${loader.name}, ${ctx.options.connections} connections`, ...(def.notes ?? [])]
      if (def.newConnectionPerRequest && loader.name !== 'wrk') {
        notes.push('wrk not used: a Node socket loop opened the connections, so figures are lower than wrk would show')
      }
      return { rows, notes, directIsCeiling: def.directIsCeiling ?? true }
    },
  }
}
