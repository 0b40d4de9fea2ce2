// A worker's copy of the primary's embedded registry, kept current over IPC: a snapshot when
// the worker starts, then every change as it is committed. Lookups are synchronous (the route
// cache reads it directly), and changes carry the previous entry so open tunnels to a server
// that went away are closed in every worker.

import type { RegistryEvent, RegistrySnapshot, RegistrySource, RegistrySourceState } from '../registry/registry-source.js'
import type { ServerEntry } from '../registry/server-entry.js'

export class ReplicaRegistry implements RegistrySource {
  private readonly map = new Map<string, ServerEntry>()
  private readonly listeners: ((event: RegistryEvent) => void)[] = []
  private version = -1
  private lastEventAt: number | null = null

  get size(): number {
    return this.map.size
  }

  get(key: string): ServerEntry | null {
    return this.map.get(key) ?? null
  }

  lookup(key: string): Promise<ServerEntry | null> {
    return Promise.resolve(this.get(key))
  }

  list(): Promise<RegistrySnapshot> {
    return Promise.resolve({ version: this.version, servers: [...this.map.values()] })
  }

  subscribe(listener: (event: RegistryEvent) => void): () => void {
    this.listeners.push(listener)
    return () => {
      const i = this.listeners.indexOf(listener)
      if (i !== -1) this.listeners.splice(i, 1)
    }
  }

  state(): RegistrySourceState {
    return { connected: true, lastVersion: this.version, lastEventAt: this.lastEventAt, lastEventLagMs: null, lookupErrors: 0, streamErrors: 0, eventErrors: 0 }
  }

  /** The whole registry: differences from what was held are applied as events. */
  applySnapshot(snapshot: RegistrySnapshot): void {
    const next = new Map(snapshot.servers.map((s) => [s.key, s]))
    for (const [key, previous] of this.map) {
      if (!next.has(key)) this.apply({ op: 'delete', version: snapshot.version, key, previous })
    }
    for (const server of snapshot.servers) {
      const previous = this.map.get(server.key) ?? null
      if (previous === null || previous.target !== server.target || previous.workspaceId !== server.workspaceId || previous.server !== server.server) {
        this.apply({ op: 'put', version: snapshot.version, server, previous })
      }
    }
    this.version = snapshot.version
  }

  /** One committed change from the primary. */
  apply(event: RegistryEvent): void {
    if (event.op === 'reset') return
    this.lastEventAt = Date.now()
    if (event.version > this.version) this.version = event.version
    let withPrevious: RegistryEvent
    if (event.op === 'put') {
      withPrevious = { ...event, previous: this.map.get(event.server.key) ?? null }
      this.map.set(event.server.key, event.server)
    } else {
      withPrevious = { ...event, previous: this.map.get(event.key) ?? null }
      this.map.delete(event.key)
    }
    for (const l of this.listeners) l(withPrevious)
  }
}
