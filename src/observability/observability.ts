// Everything that watches the gateway through its diagnostics channels, started and
// reconfigured together: metrics and stats, the access log, the operational event log.

import type { AccessLogConfig } from '../config/types.js'
import { AccessLog } from './access-log.js'
import { EventLog, type LogSink } from './event-log.js'
import { Metrics } from './metrics.js'

export class Observability {
  readonly metrics = new Metrics()
  readonly accessLog: AccessLog
  private readonly events: EventLog

  private constructor(accessLog: AccessLogConfig, log: LogSink) {
    this.accessLog = new AccessLog(accessLog)
    this.events = new EventLog(log)
  }

  /** Subscribes everything; rejects when the access log file cannot be opened. */
  static async start(accessLog: AccessLogConfig, log: LogSink): Promise<Observability> {
    const o = new Observability(accessLog, log)
    o.metrics.start()
    o.events.start()
    try {
      await o.accessLog.start()
    } catch (err) {
      o.metrics.stop()
      o.events.stop()
      throw new Error(`cannot open the access log ${accessLog.path}: ${(err as Error).message}`, { cause: err })
    }
    return o
  }

  /** Applies a reloaded `accessLog` section. */
  configure(accessLog: AccessLogConfig): Promise<void> {
    return this.accessLog.configure(accessLog)
  }

  /** SIGUSR1: reopen log files after rotation. */
  reopenLogs(): void {
    this.accessLog.reopen()
  }

  async close(): Promise<void> {
    this.metrics.stop()
    this.events.stop()
    await this.accessLog.close()
  }
}
