// A named set of targets and how to choose among them: round-robin by default,
// least-connections on request. Targets out of rotation (passive or active health) are
// skipped; when none is left, pick() answers null and the caller says no_healthy_upstream.

import type { Target } from './target.js'

export type Balance = 'round-robin' | 'least-connections'

export class UpstreamGroup {
  private next = 0

  constructor(
    readonly name: string,
    readonly targets: readonly Target[],
    readonly balance: Balance,
    /** HTML served (503) to browsers when this upstream cannot answer; null: plain error. */
    readonly errorPage: string | null = null,
  ) {}

  /** `exclude`: a target that just failed to connect (a retry goes elsewhere). */
  pick(now: number, exclude: Target | null = null): Target | null {
    const ts = this.targets
    const n = ts.length
    if (n === 1) {
      const t = ts[0]
      return t !== exclude && t.available(now) ? t : null
    }
    if (this.balance === 'least-connections') {
      // Fewest in use among healthy targets (ties rotate); failing that, a trial of one
      // whose cool-down is over.
      let best: Target | null = null
      const start = this.next++ % n
      for (let i = 0; i < n; i++) {
        const t = ts[(start + i) % n]
        if (t !== exclude && t.healthy && (best === null || t.active < best.active)) best = t
      }
      if (best !== null) return best
      for (const t of ts) if (t !== exclude && t.available(now)) return t
      return null
    }
    for (let i = 0; i < n; i++) {
      const t = ts[this.next]
      this.next = (this.next + 1) % n
      if (t !== exclude && t.available(now)) return t
    }
    return null
  }
}
