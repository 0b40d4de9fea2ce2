// One coarse clock and one sweep for every deadline in the gateway (header and response
// timeouts, idle tunnels, idle pooled connections). Arming a deadline is a field write on the
// hot path instead of a timer per request; the sweep runs every SWEEP_MS, so a deadline fires
// at most SWEEP_MS late (the contract's "within a second" holds with room to spare).

export const SWEEP_MS = 250

export interface Expirable {
  /** Epoch ms at which `expire` is due; 0 means no deadline. */
  deadline: number
  expire(now: number): void
}

export class DeadlineSweeper {
  /** Epoch ms, refreshed every sweep: cheap enough to read on every request. */
  now = Date.now()
  private readonly items = new Set<Expirable>()
  private readonly timer: NodeJS.Timeout

  constructor(private readonly onSweep?: (now: number) => void) {
    this.timer = setInterval(() => this.sweep(), SWEEP_MS)
    this.timer.unref()
  }

  add(item: Expirable): void {
    this.items.add(item)
  }

  delete(item: Expirable): void {
    this.items.delete(item)
  }

  /**
   * A deadline `ms` from now. Read from the real clock (the coarse one may be a sweep old,
   * which would make deadlines fire early); it then fires at most SWEEP_MS late.
   */
  after(ms: number): number {
    return Date.now() + ms
  }

  sweep(): void {
    const now = (this.now = Date.now())
    for (const item of this.items) {
      if (item.deadline !== 0 && item.deadline <= now) {
        try {
          item.expire(now)
        } catch (err) {
          // An expiry handler must never stop the sweep for everyone else.
          process.emitWarning(`deadline handler failed: ${(err as Error).stack ?? err}`)
        }
      }
    }
    this.onSweep?.(now)
  }

  close(): void {
    clearInterval(this.timer)
    this.items.clear()
  }
}
