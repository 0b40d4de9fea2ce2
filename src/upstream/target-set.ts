// Every Target the gateway talks to, by "host:port". Static routes' targets live as long as
// their routes; workspace targets come and go with the registry and are dropped when idle.

import type { DeadlineSweeper } from '../timers.js'
import { Target, type PoolSettings } from './target.js'

export class TargetSet {
  private readonly targets = new Map<string, Target>()

  constructor(private readonly sweeper: DeadlineSweeper, public settings: PoolSettings) {}

  get(key: string): Target {
    let t = this.targets.get(key)
    if (t === undefined) {
      t = new Target(key, this.sweeper, this.settings)
      this.targets.set(key, t)
    }
    return t
  }

  peek(key: string): Target | undefined {
    return this.targets.get(key)
  }

  all(): IterableIterator<Target> {
    return this.targets.values()
  }

  /** Drops targets with nothing open that no live route names (called from the sweep). */
  prune(keep: (key: string) => boolean): void {
    for (const [key, t] of this.targets) {
      if (t.active === 0 && t.idleCount === 0 && !keep(key)) this.targets.delete(key)
    }
  }

  closeIdle(): void {
    for (const t of this.targets.values()) t.closeIdle()
  }
}
