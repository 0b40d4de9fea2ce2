// Websocket messages through a tunnel: each client ping-pongs 64-byte binary messages.
import { runWsEcho } from '../loaders/ws-echo.js'
import { DEFAULT_SPEC, TARGET_NAMES } from '../targets/target.js'
import { measureTargets } from './measure-targets.js'
import type { Scenario, ScenarioContext, ScenarioOutput } from './scenario.js'

const MESSAGE_BYTES = 64

export const wsEcho: Scenario = {
  name: 'ws-echo',
  title: `websocket echo round trips (${MESSAGE_BYTES}-byte messages) through a tunnel`,
  async run(ctx: ScenarioContext): Promise<ScenarioOutput> {
    const clients = ctx.options.connections
    const rows = await measureTargets(ctx, TARGET_NAMES, DEFAULT_SPEC, '', (target, seconds) =>
      runWsEcho({ url: `${target.httpUrl.replace('http:', 'ws:')}/echo`, clients, seconds, messageBytes: MESSAGE_BYTES }))
    return { rows, notes: [`loader: node ws clients, ${clients} clients, one message in flight each`] }
  },
}
