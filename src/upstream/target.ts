// One upstream address ("host:port"), its keep-alive pool and its health. Targets are shared:
// two routes naming the same address share one pool, and a workspace server resolved through
// the registry lands on the same Target as a static route to that address would.

import { gatewayEvent } from '../observability/channels.js'
import type { DeadlineSweeper } from '../timers.js'
import { UpstreamConnection } from './upstream-connection.js'

export interface PoolSettings {
  connectMs: number
  upstreamIdleMs: number
  /** Idle connections kept per target; more are closed on release. */
  maxIdle: number
}

/** Passive health settings of the upstream group(s) a target belongs to. */
export interface HealthSettings {
  /** Consecutive failures that take the target out. */
  maxFails: number
  /** ms out of rotation before one trial request. */
  cooldownMs: number
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
  /** Set for targets of static upstream groups; workspace targets have no health to track. */
  health: HealthSettings | null = null
  /** Consecutive connect (or active check) failures. */
  failures = 0
  /** Epoch ms until which the target is out of rotation; 0 while healthy. */
  downUntil = 0
  /**
   * Until when a trial request owns a target whose cool-down ran out (0: no trial). Bounded
   * by connectMs, so a trial whose request was abandoned mid-connect cannot keep the target
   * out of rotation for good.
   */
  private trialUntil = 0

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

  get healthy(): boolean {
    return this.downUntil === 0
  }

  /**
   * May this target take a request now? A target out of rotation gets exactly one trial
   * request once its cool-down is over; that request's outcome decides (HAProxy's
   * "observe layer4" with a slow start of one).
   */
  available(now: number): boolean {
    if (this.downUntil === 0) return true
    if (this.downUntil > now || this.trialUntil > now) return false
    this.trialUntil = now + this.settings.connectMs
    return true
  }

  /** The trial's connection was abandoned before it connected: the next request may try. */
  trialAbandoned(): void {
    this.trialUntil = 0
  }

  /** A connection succeeded (or an active check passed). */
  markUp(): void {
    this.failures = 0
    this.trialUntil = 0
    if (this.downUntil !== 0) {
      this.downUntil = 0
      if (gatewayEvent.hasSubscribers) gatewayEvent.publish({ event: 'upstream_up', target: this.key })
    }
  }

  /** A connection failed (or an active check did). */
  markFailed(why: string): void {
    this.trialUntil = 0
    const health = this.health
    if (health === null) return
    this.failures++
    if (this.failures < health.maxFails && this.downUntil === 0) return
    const wasUp = this.downUntil === 0
    this.downUntil = this.sweeper.now + health.cooldownMs
    if (wasUp) {
      this.closeIdle()
      if (gatewayEvent.hasSubscribers) gatewayEvent.publish({ event: 'upstream_down', target: this.key, failures: this.failures, reason: why, cooldownMs: health.cooldownMs })
    }
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

  /** A connection that failed or was abandoned mid-exchange. */
  discard(conn: UpstreamConnection): void {
    this.active--
    conn.destroy()
  }

  /** A connection that closed or left for a tunnel: no longer ours to time or pool. */
  forget(conn: UpstreamConnection): void {
    this.sweeper.delete(conn)
    const i = this.idle.indexOf(conn)
    if (i !== -1) this.idle.splice(i, 1)
  }

  /** Closes every idle connection (the target went away, went down, or shutdown). */
  closeIdle(): void {
    for (const conn of this.idle.splice(0)) conn.destroy()
  }
}
