// What the route cache needs from a registry, whichever one it is: the master's (remote,
// `RegistryClient`) or this gateway's own (`EmbeddedRegistry`).

import type { ServerEntry } from './server-entry.js'

/**
 * A change, in registry order. `version` is the registry's version after the change (the SSE
 * `id:`). `previous` is set by a source that knows it (the embedded registry); the remote
 * protocol does not carry it. `ts` is when the registry made the change (ms since the epoch),
 * when it says.
 */
export type RegistryEvent =
  | { readonly op: 'put'; readonly version: number; readonly server: ServerEntry; readonly previous?: ServerEntry | null; readonly ts?: number }
  | { readonly op: 'delete'; readonly version: number; readonly key: string; readonly previous?: ServerEntry | null; readonly ts?: number }
  /** The source lost track of changes (`since` older than the registry's log): drop everything cached. */
  | { readonly op: 'reset'; readonly version: number | null }

export interface RegistrySnapshot {
  readonly version: number
  readonly servers: readonly ServerEntry[]
}

export interface RegistrySourceState {
  /** The event feed is live (for the embedded registry: always). */
  readonly connected: boolean
  /** Version of the last change seen; -1 before the first. */
  readonly lastVersion: number
  /** Wall-clock ms of the last event received (any event, keepalives excluded); null: none yet. */
  readonly lastEventAt: number | null
  /** Receipt time minus the registry's `ts` of the last event carrying one; null: unknown. */
  readonly lastEventLagMs: number | null
  readonly lookupErrors: number
  readonly streamErrors: number
  /** Events that failed validation and were skipped. */
  readonly eventErrors: number
}

export interface RegistrySource {
  /** The entry for `key`, null when the registry does not know it; rejects when it cannot say. */
  lookup(key: string): Promise<ServerEntry | null>
  /** Every entry and the version they are at (used to reconcile after a reset). */
  list(): Promise<RegistrySnapshot>
  /** Live changes; returns the unsubscribe function. Listeners must not throw. */
  subscribe(listener: (event: RegistryEvent) => void): () => void
  state(): RegistrySourceState
  /**
   * Present only on a source that holds every entry in this process (the embedded registry):
   * a synchronous, authoritative read. The route cache then skips its own LRU entirely.
   */
  get?(key: string): ServerEntry | null
  /** Number of entries, when `get` is present. */
  readonly size?: number
}

/** A registry answered something unusable, or could not be reached. */
export class RegistryError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'RegistryError'
  }
}
