// The two-way byte tunnel behind a websocket upgrade. One function wires both directions with
// backpressure, and every way a socket can end (FIN, error, close, idle timeout, teardown by
// the registry, shutdown) closes its partner: no socket outlives the other (the classic
// node-http-proxy leak was a.pipe(b) without this wiring).

import type { Duplex } from 'node:stream'
import { Outbox } from '../outbox.js'
import { probeEndForReset } from '../reset-probe.js'
import type { DeadlineSweeper, Expirable } from '../timers.js'

/** After one side ends, the other gets this long to flush before both are destroyed. */
const HALF_CLOSE_GRACE_MS = 5000

export interface TunnelInfo {
  readonly listener: string
  readonly target: string
  readonly workspaceKey: string | null
  readonly routeId: string
}

export class Tunnel implements Expirable {
  deadline: number
  lastActivity: number
  bytesUp = 0
  bytesDown = 0
  /** When a FIN arrived from one side: the time by which both are destroyed; 0 before. */
  private halfClosedAt = 0
  private closed = false
  /** What goes to each side (outbox.ts). */
  private readonly outboxes: Outbox[] = []
  private readonly openedAt: number

  constructor(
    readonly client: Duplex,
    readonly upstream: Duplex,
    readonly info: TunnelInfo,
    private readonly idleMs: number,
    private readonly sweeper: DeadlineSweeper,
    private readonly onClose: (t: Tunnel) => void,
  ) {
    this.openedAt = this.lastActivity = sweeper.now
    this.deadline = sweeper.now + idleMs
    sweeper.add(this)
    this.wire(client, upstream, true)
    this.wire(upstream, client, false)
  }

  get durationMs(): number {
    return Date.now() - this.openedAt
  }

  private wire(from: Duplex, to: Duplex, up: boolean): void {
    const out = new Outbox(to)
    this.outboxes.push(out)
    from.on('data', (chunk: Buffer) => {
      if (up) this.bytesUp += chunk.length
      else this.bytesDown += chunk.length
      this.lastActivity = this.sweeper.now
      if (!out.write(chunk)) from.pause()
    })
    to.on('drain', () => from.resume())
    // The upstream's socket is not half-open (takeSocket): on its FIN node ends it itself, on
    // the next tick, past the Outbox. What is held for it goes out first, as it did unheld.
    to.on('end', () => out.flush())
    from.on('end', () => {
      // An 'end' may be a reset (reset-probe.ts). Where this side can still be written (the
      // client's is half-open), it is checked: on a reset, both close at once.
      if (from.allowHalfOpen && !from.writableEnded) probeEndForReset(from, (reset) => { if (reset) this.close() })
      // A FIN is passed on, and the tunnel is given a short grace to flush before both go.
      out.end()
      if (this.halfClosedAt === 0) {
        this.halfClosedAt = this.sweeper.now + HALF_CLOSE_GRACE_MS
        this.deadline = Math.min(this.deadline, this.halfClosedAt)
      }
    })
    from.on('error', () => this.close())
    from.on('close', () => {
      // A close after FINs both ways (the upstream's side is not half-open: its FIN ends ours)
      // can come while bytes from before the FIN still wait for a slow reader on the other
      // side: they go out first, within the half-close grace, and are not destroyed with it.
      if (to.writableEnded && !to.writableFinished && !to.destroyed) to.once('finish', () => this.close())
      else this.close()
    })
  }

  /** Idle past tunnelIdleMs, or a half-closed tunnel past its grace. */
  expire(now: number): void {
    const idleAt = this.lastActivity + this.idleMs
    if (idleAt <= now || (this.halfClosedAt !== 0 && this.halfClosedAt <= now)) {
      this.close()
      return
    }
    // Traffic since the deadline was armed: push it out (data events only stamp the clock).
    this.deadline = this.halfClosedAt !== 0 ? Math.min(idleAt, this.halfClosedAt) : idleAt
  }

  /**
   * Destroys both sockets at once; safe to call more than once. Bytes held for a side that is
   * still open go out first, as they would have had they not been held.
   */
  close(): void {
    if (this.closed) return
    this.closed = true
    this.sweeper.delete(this)
    for (const out of this.outboxes) out.flush()
    this.client.destroy()
    this.upstream.destroy()
    this.onClose(this)
  }
}
