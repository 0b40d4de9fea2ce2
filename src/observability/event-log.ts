// Operational events (the gatewayEvent channel: reloads, route changes, limits hit, targets
// down and up, workspace servers changing) as structured log lines. Each event name is
// limited to a burst per second: a flood of refused connections must not turn into a flood of
// synchronous stderr writes; what was held back is counted in the next line of that name.

import { gatewayEvent } from './channels.js'

/** The gateway's log sink: a message and structured fields (one JSON line on stderr by default). */
export type LogSink = (message: string, fields?: Record<string, unknown>) => void

const WARN_EVENTS = new Set(['limit_hit', 'proxy_protocol_refused', 'upstream_down', 'listener_error', 'access_log_error', 'state_file_error', 'worker_restarted'])
/** Lines per event name per second. */
const BURST = 20

export class EventLog {
  private readonly windows = new Map<string, { start: number; n: number; suppressed: number }>()
  private subscribed = false

  constructor(private readonly sink: LogSink) {}

  start(): void {
    if (this.subscribed) return
    this.subscribed = true
    gatewayEvent.subscribe(this.onEvent)
  }

  stop(): void {
    if (!this.subscribed) return
    this.subscribed = false
    gatewayEvent.unsubscribe(this.onEvent)
  }

  private readonly onEvent = (message: unknown): void => {
    const m = message as Record<string, unknown>
    const name = typeof m.event === 'string' ? m.event : 'event'
    const now = Date.now()
    let w = this.windows.get(name)
    if (w === undefined) this.windows.set(name, w = { start: now, n: 0, suppressed: 0 })
    if (now - w.start >= 1000) {
      w.start = now
      w.n = 0
    }
    if (++w.n > BURST) {
      w.suppressed++
      return
    }
    const level = name === 'internal_error' ? 'error' : WARN_EVENTS.has(name) || (name === 'reload' && m.ok === false) ? 'warn' : 'info'
    const fields: Record<string, unknown> = { level, ...m }
    if (w.suppressed > 0) {
      fields.suppressed = w.suppressed
      w.suppressed = 0
    }
    this.sink(name, fields)
  }
}
