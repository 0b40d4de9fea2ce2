// The route cache: registry key -> workspace server, in front of a RegistrySource
// (contract: "Registry protocol", last paragraph).
//
// Two modes, chosen by the source:
// - A remote registry (RegistryClient): a bounded LRU of positive and negative answers.
//   A fresh hit returns synchronously. An expired positive entry is still returned
//   synchronously while one background lookup revalidates it (stale-while-revalidate,
//   RFC 5861 section 3), for at most `staleIfErrorMs` past its expiry (stale-if-error,
//   RFC 5861 section 4): a cached key never waits on the registry, and a registry outage is
//   invisible to it for that long. Misses share one lookup per key. Negative answers are
//   never served stale: during an outage an unknown key is `registry_unavailable`, not 404.
// - The embedded registry (a source with a synchronous `get`): every entry is in this
//   process, so the cache holds nothing and `resolve` reads the registry's map directly,
//   always synchronously. There is nothing to expire, revalidate or purge.
//
// 'server-changed' (key, previous, next) is emitted when an event, or a lookup, shows a key's
// target changed or went away. `previous` is null when this cache did not hold the key (a
// remote put or delete for a key it never resolved, or one it evicted); listeners should
// compare `next` with the target they are actually connected to. A reset emits 'reset' once
// (no arguments), then, once the registry's full list arrives, 'server-changed' for every
// dropped key whose target differs from the list (re-caching the rest), so open tunnels are
// only closed for keys that really moved.

import { EventEmitter } from 'node:events'
import { LRUCache } from 'lru-cache'
import { GatewayError } from '../errors.js'
import type { RegistryEvent, RegistrySource } from '../registry/registry-source.js'
import { sameTarget } from '../registry/server-entry.js'
import type { ServerEntry } from '../registry/server-entry.js'

export interface RouteCacheOptions {
  /** Most keys kept (positive and negative). */
  readonly cacheSize: number
  /** How long a found entry is fresh, ms. */
  readonly cacheTtlMs: number
  /** How long a "not found" answer is fresh, ms. */
  readonly negativeTtlMs: number
  /** How long past its expiry a found entry may still be served while the registry fails, ms. */
  readonly staleIfErrorMs: number
}

export interface RouteCacheStats {
  /** Keys cached (embedded registry: entries in the registry). */
  readonly size: number
  /** Answers from a fresh entry (embedded registry: every resolve). */
  readonly hits: number
  /** Resolves that had to wait for the registry. */
  readonly misses: number
  /** Answers from an expired entry (while revalidating, or because the registry failed). */
  readonly staleServed: number
  /** Failed lookups (errors, timeouts, garbage) and failed lists after a reset. */
  readonly registryErrors: number
  /** Registry events received (put, delete, reset). */
  readonly eventsApplied: number
  /** Receipt time minus the registry's `ts` of the last event; without a `ts`: ms since the last event; null: no event yet. */
  readonly lastEventLagMs: number | null
  /** The registry's event feed is live. */
  readonly connected: boolean
}

export interface RouteCacheEvents {
  'server-changed': [key: string, previous: ServerEntry | null, next: ServerEntry | null]
  reset: []
}

interface Entry {
  value: ServerEntry | null
  /** performance.now() ms until which the entry is fresh. */
  expiresAt: number
  /** ... and until which a positive one may be served stale. */
  staleUntil: number
  /** No background revalidation before this (after one failed). */
  retryAt: number
}

interface Flight {
  readonly promise: Promise<ServerEntry | null>
  /** An event for the key arrived while the lookup was out: the event's answer wins. */
  superseded: boolean
}

/** After a failed background revalidation, the next one waits this long (the key is still served stale). */
const REVALIDATE_RETRY_MS = 1000

export class RouteCache extends EventEmitter<RouteCacheEvents> {
  private readonly lru: LRUCache<string, Entry>
  private readonly inflight = new Map<string, Flight>()
  private readonly authoritative: ((key: string) => ServerEntry | null) | null
  private readonly unsubscribe: () => void
  /** Keys dropped by a reset and not yet reconciled with the registry's list. */
  private reconciling: Map<string, ServerEntry> | null = null
  private closed = false

  private hits = 0
  private misses = 0
  private staleServed = 0
  private registryErrors = 0
  private eventsApplied = 0

  constructor(private readonly source: RegistrySource, private readonly options: RouteCacheOptions) {
    super()
    this.lru = new LRUCache<string, Entry>({ max: Math.max(1, options.cacheSize) })
    this.authoritative = source.get === undefined ? null : source.get.bind(source)
    this.unsubscribe = source.subscribe((event) => this.onEvent(event))
  }

  /**
   * The workspace server for `key`, or null when the registry does not know it. Synchronous
   * whenever the answer is cached (check with `instanceof Promise`); otherwise a Promise that
   * rejects with GatewayError('registry_unavailable') when the registry cannot answer.
   */
  resolve(key: string): ServerEntry | null | Promise<ServerEntry | null> {
    if (this.authoritative !== null) {
      this.hits++
      return this.authoritative(key)
    }
    const entry = this.lru.get(key)
    if (entry !== undefined) {
      const now = performance.now()
      if (now < entry.expiresAt) {
        this.hits++
        return entry.value
      }
      if (entry.value !== null && now < entry.staleUntil) {
        this.staleServed++
        if (now >= entry.retryAt && !this.inflight.has(key)) this.lookup(key).catch(noop)
        return entry.value
      }
    }
    this.misses++
    return this.lookup(key)
  }

  /** Drops one key, or everything (admin `POST /cache/purge`). Emits nothing: targets did not change. */
  purge(key?: string): void {
    if (key === undefined) {
      this.lru.clear()
      for (const flight of this.inflight.values()) flight.superseded = true
    } else {
      this.lru.delete(key)
      const flight = this.inflight.get(key)
      if (flight !== undefined) flight.superseded = true
    }
  }

  stats(): RouteCacheStats {
    const state = this.source.state()
    const lag = state.lastEventLagMs ?? (state.lastEventAt === null ? null : Math.max(0, Date.now() - state.lastEventAt))
    return {
      size: this.authoritative !== null ? (this.source.size ?? 0) : this.lru.size,
      hits: this.hits,
      misses: this.misses,
      staleServed: this.staleServed,
      registryErrors: this.registryErrors,
      eventsApplied: this.eventsApplied,
      lastEventLagMs: lag,
      connected: state.connected,
    }
  }

  /** Stops following the source's events and drops the cache. The source itself stays open (its owner closes it). */
  close(): void {
    if (this.closed) return
    this.closed = true
    this.unsubscribe()
    this.lru.clear()
    this.reconciling = null
  }

  private lookup(key: string): Promise<ServerEntry | null> {
    const existing = this.inflight.get(key)
    if (existing !== undefined) return existing.promise
    const flight: Flight = { promise: undefined as unknown as Promise<ServerEntry | null>, superseded: false }
    ;(flight as { promise: Promise<ServerEntry | null> }).promise = this.source.lookup(key).then(
      (value) => this.onLookup(key, flight, value),
      (err: unknown) => this.onLookupError(key, flight, err),
    )
    this.inflight.set(key, flight)
    return flight.promise
  }

  private onLookup(key: string, flight: Flight, value: ServerEntry | null): ServerEntry | null {
    if (this.inflight.get(key) === flight) this.inflight.delete(key)
    if (this.closed) return value
    if (flight.superseded) {
      // An event (or a purge) overtook this answer; only a cached event answer is newer.
      const entry = this.lru.peek(key)
      return entry !== undefined ? entry.value : value
    }
    const previous = this.lru.peek(key)
    this.store(key, value)
    this.reconciling?.delete(key)
    if (previous !== undefined && previous.value !== null && !sameTarget(previous.value, value)) {
      this.changed(key, previous.value, value)
    }
    return value
  }

  private onLookupError(key: string, flight: Flight, err: unknown): ServerEntry | null {
    if (this.inflight.get(key) === flight) this.inflight.delete(key)
    this.registryErrors++
    const now = performance.now()
    const entry = this.lru.peek(key)
    if (entry !== undefined && entry.value !== null && now < entry.staleUntil) {
      entry.retryAt = now + REVALIDATE_RETRY_MS
      this.staleServed++
      return entry.value
    }
    const reason = err instanceof Error ? err.message : String(err)
    throw new GatewayError('registry_unavailable', `the workspace registry cannot resolve ${key}: ${reason}`, { cause: err })
  }

  private store(key: string, value: ServerEntry | null): void {
    const now = performance.now()
    const expiresAt = now + (value === null ? this.options.negativeTtlMs : this.options.cacheTtlMs)
    const staleUntil = value === null ? expiresAt : expiresAt + this.options.staleIfErrorMs
    this.lru.set(key, { value, expiresAt, staleUntil, retryAt: 0 })
  }

  private onEvent(event: RegistryEvent): void {
    if (this.closed) return
    this.eventsApplied++
    if (event.op === 'reset') {
      this.onReset()
      return
    }
    const key = event.op === 'put' ? event.server.key : event.key
    const next = event.op === 'put' ? event.server : null
    if (this.authoritative !== null) {
      // The source tells what it replaced.
      const previous = event.previous ?? null
      if (!sameTarget(previous, next)) this.changed(key, previous, next)
      return
    }
    this.reconciling?.delete(key)
    const flight = this.inflight.get(key)
    if (flight !== undefined) flight.superseded = true
    const cached = this.lru.peek(key)
    // Only keys this cache holds (or is fetching) are updated: a busy master's puts for keys
    // nobody asked for must not evict the ones in use.
    if (cached !== undefined || flight !== undefined) this.store(key, next)
    const previous = cached?.value ?? null
    if (cached === undefined || !sameTarget(previous, next)) this.changed(key, previous, next)
  }

  private onReset(): void {
    const dropped = new Map<string, ServerEntry>()
    for (const [key, entry] of this.lru.entries()) {
      if (entry.value !== null) dropped.set(key, entry.value)
    }
    if (this.reconciling !== null) {
      for (const [key, value] of this.reconciling) if (!dropped.has(key)) dropped.set(key, value)
    }
    this.lru.clear()
    for (const flight of this.inflight.values()) flight.superseded = true
    this.safeEmit('reset')
    if (dropped.size === 0) {
      this.reconciling = null
      return
    }
    const reconciling = dropped
    this.reconciling = reconciling
    this.source.list().then((snapshot) => {
      if (this.closed || this.reconciling !== reconciling) return
      this.reconciling = null
      const current = new Map<string, ServerEntry>()
      for (const server of snapshot.servers) current.set(server.key, server)
      // Keys touched by an event or a lookup since the reset were removed from `reconciling`.
      for (const [key, previous] of reconciling) {
        const next = current.get(key) ?? null
        if (!this.lru.has(key) && !this.inflight.has(key)) this.store(key, next)
        if (!sameTarget(previous, next)) this.changed(key, previous, next)
      }
    }, () => {
      // Without the list, dropped keys are simply looked up again on their next request.
      this.registryErrors++
      if (this.reconciling === reconciling) this.reconciling = null
    })
  }

  private changed(key: string, previous: ServerEntry | null, next: ServerEntry | null): void {
    this.safeEmit('server-changed', key, previous, next)
  }

  private safeEmit<K extends keyof RouteCacheEvents>(name: K, ...args: RouteCacheEvents[K]): void {
    try {
      ;(this.emit as (name: string, ...args: unknown[]) => boolean)(name, ...args)
    } catch {
      // A listener's bug must not break resolution or event application.
    }
  }
}

function noop(): void {}
