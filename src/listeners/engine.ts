// What every front connection shares: the router (swapped whole on route changes), the
// settings in force, the deadline sweep, and the registry of open connections and tunnels
// that shutdown and workspace teardown walk.

import { randomBytes } from 'node:crypto'
import type { LimitsConfig, TimeoutsConfig } from '../config/types.js'
import type { Router } from '../routing/router.js'
import type { DeadlineSweeper } from '../timers.js'
import type { Tunnel } from '../websocket/tunnel.js'
import type { ClientConnection } from './client-connection.js'

export interface EngineSettings {
  readonly timeouts: TimeoutsConfig
  readonly limits: LimitsConfig
  /** Cookies removed from requests to workspace servers. */
  readonly stripCookies: ReadonlySet<string>
}

export class Engine {
  readonly connections = new Set<ClientConnection>()
  readonly tunnels = new Set<Tunnel>()
  /** Open front connections per client address (only kept when a per-client cap is set). */
  readonly perClient = new Map<string, number>()
  draining = false
  /** Connections refused over a limit (maxConnections, maxConnectionsPerClient, shutdown). */
  refused = 0
  private readonly idPrefix = randomBytes(6).toString('hex')
  private idCounter = 0

  constructor(
    public router: Router,
    public settings: EngineSettings,
    readonly sweeper: DeadlineSweeper,
  ) {}

  /** Unique per process run: a random prefix and a counter (no syscall per request). */
  nextRequestId(): string {
    return `${this.idPrefix}-${(++this.idCounter).toString(36)}`
  }

  /** Closes the tunnels `match` selects (registry teardown, shutdown). Returns how many. */
  closeTunnels(match: (t: Tunnel) => boolean): number {
    let n = 0
    for (const t of [...this.tunnels]) {
      if (match(t)) {
        t.close()
        n++
      }
    }
    return n
  }
}
