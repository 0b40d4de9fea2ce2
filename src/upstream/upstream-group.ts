// A named set of targets and how to choose among them. Round-robin by default;
// least-connections picks the target with the fewest connections in use.

import type { Target } from './target.js'

export type Balance = 'round-robin' | 'least-connections'

export class UpstreamGroup {
  private next = 0

  constructor(readonly name: string, readonly targets: readonly Target[], readonly balance: Balance) {}

  pick(): Target {
    const ts = this.targets
    if (ts.length === 1) return ts[0]
    if (this.balance === 'least-connections') {
      let best = ts[this.next++ % ts.length]
      for (const t of ts) if (t.active < best.active) best = t
      return best
    }
    const t = ts[this.next]
    this.next = (this.next + 1) % ts.length
    return t
  }
}
