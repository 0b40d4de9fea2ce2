// One upstream address ("host:port") and its keep-alive pool. Targets are shared: two routes
// naming the same address share one pool, and a workspace server resolved through the
// registry lands on the same Target as a static route to that address would.

import type { DeadlineSweeper } from '../timers.js'
import { UpstreamConnection } from './upstream-connection.js'

export interface PoolSettings {
  connectMs: number
  upstreamIdleMs: number
  /** Idle connections kept per target; more are closed on release. */
  maxIdle: number
}

export class Target {
  readonly host: string
  readonly port: number
  /** Idle connections, most recently used last (LIFO keeps the warmest socket busy). */
  private readonly idle: UpstreamConnection[] = []
  /** Connections in use or connecting. */
  active = 0
  /** Counts for /stats. */
  requests = 0
  errors = 0

  constructor(readonly key: string, private readonly sweeper: DeadlineSweeper, private readonly settings: PoolSettings) {
    const colon = key.lastIndexOf(':')
    let host = key.slice(0, colon)
    if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1)
    this.host = host
    this.port = Number(key.slice(colon + 1))
  }

  get idleCount(): number {
    return this.idle.length
  }

  /** A pooled connection when one is idle, else a new one (connecting). */
  acquire(): UpstreamConnection {
    this.active++
    this.requests++
    while (this.idle.length > 0) {
      const conn = this.idle.pop()!
      if (!conn.closed) return conn
      this.sweeper.delete(conn)
    }
    return this.connect()
  }

  /** Always a new connection (websocket upgrades, retries after a stale keep-alive). */
  acquireFresh(): UpstreamConnection {
    this.active++
    this.requests++
    return this.connect()
  }

  private connect(): UpstreamConnection {
    const conn = new UpstreamConnection(this, this.sweeper.after(this.settings.connectMs))
    this.sweeper.add(conn)
    return conn
  }

  /** Back from an exchange: pooled when it can serve another, closed otherwise. */
  release(conn: UpstreamConnection): void {
    this.active--
    if (conn.reusable && !conn.closed && this.idle.length < this.settings.maxIdle) {
      conn.park(this.sweeper.after(this.settings.upstreamIdleMs))
      this.idle.push(conn)
    } else {
      conn.destroy()
    }
  }

  /** A connection that closed or left for a tunnel: no longer ours to time or pool. */
  forget(conn: UpstreamConnection): void {
    this.sweeper.delete(conn)
    const i = this.idle.indexOf(conn)
    if (i !== -1) this.idle.splice(i, 1)
  }

  /** Closes every idle connection (the target went away, or shutdown). */
  closeIdle(): void {
    for (const conn of this.idle.splice(0)) conn.destroy()
  }
}
