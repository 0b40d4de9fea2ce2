import { afterEach, describe, expect, it } from 'vitest'
import { gatewayEvent } from '../../src/observability/channels.js'
import { EventLog } from '../../src/observability/event-log.js'

const logs: EventLog[] = []
afterEach(() => { for (const l of logs.splice(0)) l.stop() })

function capture(): { log: EventLog; lines: { message: string; fields?: Record<string, unknown> }[] } {
  const lines: { message: string; fields?: Record<string, unknown> }[] = []
  const log = new EventLog((message, fields) => lines.push({ message, fields }))
  logs.push(log)
  log.start()
  return { log, lines }
}

describe('event log', () => {
  it('writes each operational event as a structured line with a level', () => {
    const { lines } = capture()
    gatewayEvent.publish({ event: 'routes_changed', version: 4, adminRoutes: 2 })
    gatewayEvent.publish({ event: 'reload', ok: false, errors: [{ path: 'x', message: 'y' }] })
    expect(lines).toEqual([
      { message: 'routes_changed', fields: { level: 'info', event: 'routes_changed', version: 4, adminRoutes: 2 } },
      { message: 'reload', fields: { level: 'warn', event: 'reload', ok: false, errors: [{ path: 'x', message: 'y' }] } },
    ])
  })

  it('holds back a flood of one event and says how many it held back', () => {
    const { lines } = capture()
    for (let i = 0; i < 1000; i++) gatewayEvent.publish({ event: 'limit_hit', limit: 'maxConnections' })
    expect(lines.length).toBeLessThan(50)
    gatewayEvent.publish({ event: 'routes_changed', version: 1 })
    expect(lines.at(-1)!.message).toBe('routes_changed')
  })
})
