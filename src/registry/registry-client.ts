// The master's registry, over HTTP (contract: "Registry protocol"). Lookups and the event
// stream share one undici Pool with its own timeouts, so a slow master can never hold a
// request's resolve longer than connect + headers + body timeouts. Every answer is validated;
// anything unexpected is a RegistryError (the route cache then serves stale or answers 503).

import { Pool } from 'undici'
import type { Dispatcher } from 'undici'
import { RegistryError } from './registry-source.js'
import type { RegistryEvent, RegistrySnapshot, RegistrySource, RegistrySourceState } from './registry-source.js'
import { formatFieldErrors, keyProblem, parseServerEntry } from './server-entry.js'
import type { ServerEntry } from './server-entry.js'
import { SseParser } from './sse-parser.js'
import type { SseMessage } from './sse-parser.js'

export interface RegistryClientOptions {
  /** Base URL, e.g. "http://127.0.0.1:8080/api/registry"; paths are appended to it. */
  readonly url: string
  /** Sent as `Authorization: Bearer <token>`; null: no header. */
  readonly token?: string | null
  /** TCP (+TLS) connect timeout, ms. Default 2000. */
  readonly connectTimeoutMs?: number
  /** Time to the response headers, ms. Default 3000. */
  readonly headersTimeoutMs?: number
  /** Longest silence between body chunks of a lookup or list, ms. Default 3000. */
  readonly bodyTimeoutMs?: number
  /**
   * Longest a lookup may take in all, waiting for a free connection included, ms. Default: the
   * connect, headers and body timeouts added up (8000). The others bound silences only: a
   * master that sends a byte every second would hold a lookup, and every request waiting on
   * it, until the 64 KiB answer bound, hours later.
   */
  readonly lookupTimeoutMs?: number
  /**
   * Longest a `GET /servers` list may take in all, ms. Default 60000. Not the lookup deadline:
   * a list may be up to `maxListBytes` (64 MiB), 1024 times the largest lookup answer, and a
   * deadline a healthy master cannot meet would keep the event stream from ever opening. At
   * 60 s, 64 MiB needs a little over 1 MiB/s; a master trickling its list holds the event stream
   * (which lists before it opens) and a reset's reconcile that long, not for ever.
   */
  readonly listTimeoutMs?: number
  /** Longest silence on the event stream before it is dropped and resumed, ms. Default 60000 (keepalives come every 15 s). */
  readonly eventIdleTimeoutMs?: number
  /** Reconnect backoff bounds, ms (exponential, full jitter). Default 100 and 10000. */
  readonly backoffMinMs?: number
  readonly backoffMaxMs?: number
  /** Largest accepted lookup answer, bytes. Default 64 KiB. */
  readonly maxEntryBytes?: number
  /** Largest accepted `GET /servers` answer, bytes. Default 64 MiB. */
  readonly maxListBytes?: number
  /** Longest accepted event stream line, characters. Default 64 KiB. */
  readonly maxLineLength?: number
  /** Connections to the registry (one is held by the event stream). Default 16. */
  readonly connections?: number
}

type Listener = (event: RegistryEvent) => void

export class RegistryClient implements RegistrySource {
  private readonly pool: Pool
  private readonly basePath: string
  private readonly headers: Record<string, string>
  private readonly eventIdleTimeoutMs: number
  private readonly backoffMinMs: number
  private readonly backoffMaxMs: number
  private readonly lookupTimeoutMs: number
  private readonly listTimeoutMs: number
  private readonly maxEntryBytes: number
  private readonly maxListBytes: number
  private readonly maxLineLength: number
  private readonly listeners: Listener[] = []
  private readonly closing = new AbortController()

  private streamRunning = false
  private streamDone: Promise<void> = Promise.resolve()
  private streamAbort: AbortController | null = null
  private backoffTimer: NodeJS.Timeout | null = null
  private backoffWake: (() => void) | null = null
  private attempts = 0
  private closed = false

  private connected = false
  private lastVersion = -1
  private lastEventAt: number | null = null
  private lastEventLagMs: number | null = null
  private lookupErrors = 0
  private streamErrors = 0
  private eventErrors = 0
  /** Times the event stream was (re)opened. */
  private connects = 0
  private lastStreamError: string | null = null

  constructor(options: RegistryClientOptions) {
    let base: URL
    try {
      base = new URL(options.url)
    } catch {
      throw new TypeError(`registry url ${JSON.stringify(options.url)} is not a URL`)
    }
    if (base.protocol !== 'http:' && base.protocol !== 'https:') {
      throw new TypeError(`registry url ${JSON.stringify(options.url)} must be http: or https:`)
    }
    this.basePath = base.pathname.replace(/\/+$/, '')
    this.headers = { accept: 'application/json' }
    if (options.token != null && options.token !== '') this.headers.authorization = `Bearer ${options.token}`
    this.eventIdleTimeoutMs = options.eventIdleTimeoutMs ?? 60_000
    this.backoffMinMs = options.backoffMinMs ?? 100
    this.backoffMaxMs = options.backoffMaxMs ?? 10_000
    this.lookupTimeoutMs = options.lookupTimeoutMs ??
      (options.connectTimeoutMs ?? 2000) + (options.headersTimeoutMs ?? 3000) + (options.bodyTimeoutMs ?? 3000)
    this.listTimeoutMs = options.listTimeoutMs ?? 60_000
    this.maxEntryBytes = options.maxEntryBytes ?? 64 * 1024
    this.maxListBytes = options.maxListBytes ?? 64 * 1024 * 1024
    this.maxLineLength = options.maxLineLength ?? 64 * 1024
    this.pool = new Pool(base.origin, {
      connections: options.connections ?? 16,
      connect: { timeout: options.connectTimeoutMs ?? 2000 },
      headersTimeout: options.headersTimeoutMs ?? 3000,
      bodyTimeout: options.bodyTimeoutMs ?? 3000,
      keepAliveTimeout: 10_000,
    })
  }

  async lookup(key: string): Promise<ServerEntry | null> {
    const problem = keyProblem(key)
    if (problem !== null) throw new RegistryError(`key ${JSON.stringify(key)} ${problem}`)
    return this.withDeadline(`lookup of ${key}`, this.lookupTimeoutMs, (signal) => this.fetchEntry(key, signal))
  }

  /**
   * Runs one registry request under an overall deadline: past `ms` its signal aborts (undici
   * then destroys the request and its connection) and the call rejects with a RegistryError
   * naming `what`. Timeouts on the pool bound silences only, never the whole answer.
   */
  private async withDeadline<T>(what: string, ms: number, run: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const deadline = new AbortController()
    const timer = setTimeout(() => deadline.abort(), ms)
    try {
      const answer = run(AbortSignal.any([this.closing.signal, deadline.signal]))
      answer.catch(() => {}) // when the deadline wins the race below
      // Raced as well as signalled: undici only sees the signal once the request has a connection.
      return await Promise.race([answer, new Promise<never>((_, reject) => {
        deadline.signal.addEventListener('abort', () => reject(deadline.signal.reason), { once: true })
      })])
    } catch (err) {
      this.lookupErrors++
      if (deadline.signal.aborted && !this.closed) {
        throw new RegistryError(`${what}: no whole answer within ${ms} ms`, { cause: err })
      }
      throw asRegistryError(err, what)
    } finally {
      clearTimeout(timer)
    }
  }

  private async fetchEntry(key: string, signal: AbortSignal): Promise<ServerEntry | null> {
    const res = await this.request(`${this.basePath}/servers/${encodeURIComponent(key)}`, { signal })
    if (res.statusCode === 404) {
      await discard(res.body)
      return null
    }
    const body = await this.readJson(res, this.maxEntryBytes, `lookup of ${key}`)
    const entry = parseServerEntry(body, '')
    if (Array.isArray(entry)) throw new RegistryError(`lookup of ${key}: invalid entry: ${formatFieldErrors(entry)}`)
    if (entry.key !== key.toLowerCase()) {
      throw new RegistryError(`lookup of ${key}: answer is for key ${JSON.stringify(entry.key)}`)
    }
    return entry
  }

  list(): Promise<RegistrySnapshot> {
    return this.withDeadline('list', this.listTimeoutMs, async (signal) => {
      const res = await this.request(`${this.basePath}/servers`, { signal })
      return parseSnapshot(await this.readJson(res, this.maxListBytes, 'list'))
    })
  }

  /** Adds a listener; the first one starts the event stream. */
  subscribe(listener: Listener): () => void {
    if (this.closed) throw new Error('registry client is closed')
    this.listeners.push(listener)
    if (!this.streamRunning) {
      this.streamRunning = true
      this.streamDone = this.runStream()
    }
    return () => {
      const i = this.listeners.indexOf(listener)
      if (i >= 0) this.listeners.splice(i, 1)
    }
  }

  state(): RegistrySourceState & { readonly connects: number; readonly lastStreamError: string | null } {
    return {
      connected: this.connected,
      lastVersion: this.lastVersion,
      lastEventAt: this.lastEventAt,
      lastEventLagMs: this.lastEventLagMs,
      lookupErrors: this.lookupErrors,
      streamErrors: this.streamErrors,
      eventErrors: this.eventErrors,
      connects: this.connects,
      lastStreamError: this.lastStreamError,
    }
  }

  /** Stops the event stream, aborts requests in flight and closes the connections. */
  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.connected = false
    this.closing.abort()
    this.streamAbort?.abort()
    this.wakeBackoff()
    await this.streamDone
    await this.pool.destroy()
  }

  private async request(path: string, extra?: Partial<Dispatcher.RequestOptions>): Promise<Dispatcher.ResponseData> {
    if (this.closed) throw new RegistryError('registry client is closed')
    return this.pool.request({
      path,
      method: 'GET',
      headers: this.headers,
      signal: this.closing.signal,
      ...extra,
    })
  }

  private async readJson(res: Dispatcher.ResponseData, limit: number, what: string): Promise<unknown> {
    if (res.statusCode !== 200) {
      await discard(res.body)
      throw new RegistryError(`${what}: registry answered ${res.statusCode}`)
    }
    const text = await readBounded(res, limit, what)
    try {
      return JSON.parse(text)
    } catch {
      throw new RegistryError(`${what}: answer is not JSON`)
    }
  }

  // The event stream: list once for a starting version when none is known, then follow
  // `/events?since=V` forever, resuming from the last version seen after every break.
  private async runStream(): Promise<void> {
    while (!this.closed) {
      let delivered = false
      const openedAt = performance.now()
      try {
        if (this.lastVersion < 0) this.lastVersion = (await this.list()).version
        delivered = await this.streamOnce()
      } catch (err) {
        if (this.closed) break
        this.streamErrors++
        this.lastStreamError = err instanceof Error ? err.message : String(err)
      }
      this.connected = false
      if (this.closed) break
      // A stream that delivered events or stayed up a while was healthy: start backoff over.
      if (delivered || performance.now() - openedAt > 1000) this.attempts = 0
      await this.backoff()
    }
    this.connected = false
  }

  /** One connection of the event stream; resolves when it ends, true if it delivered an event. */
  private async streamOnce(): Promise<boolean> {
    const abort = new AbortController()
    this.streamAbort = abort
    let delivered = false
    try {
      const res = await this.request(`${this.basePath}/events?since=${this.lastVersion}`, {
        headers: { ...this.headers, accept: 'text/event-stream' },
        signal: abort.signal,
        bodyTimeout: this.eventIdleTimeoutMs,
      })
      if (res.statusCode !== 200) {
        await discard(res.body)
        throw new RegistryError(`event stream: registry answered ${res.statusCode}`)
      }
      const type = String(res.headers['content-type'] ?? '')
      if (!type.toLowerCase().startsWith('text/event-stream')) {
        await discard(res.body)
        throw new RegistryError(`event stream: content-type ${JSON.stringify(type)} is not text/event-stream`)
      }
      this.connected = true
      this.connects++
      const parser = new SseParser((message) => {
        delivered = true
        this.onMessage(message)
      }, this.maxLineLength)
      try {
        for await (const chunk of res.body) parser.push(chunk as Buffer)
      } finally {
        res.body.destroy()
      }
      return delivered
    } finally {
      this.streamAbort = null
    }
  }

  private onMessage(message: SseMessage): void {
    const receivedAt = Date.now()
    this.lastEventAt = receivedAt
    let version: number | null = null
    if (message.id !== null) {
      version = parseVersion(message.id)
      if (version === null) this.eventErrors++
    }
    if (message.event === 'reset') {
      // Unknown position: the next connection lists again for a fresh starting version.
      this.lastVersion = version ?? -1
      this.emit({ op: 'reset', version })
      return
    }
    if (version !== null) this.lastVersion = version
    if (message.event !== 'message') return // unknown event types are for newer gateways
    const event = parseEventData(message.data, version ?? this.lastVersion)
    if (event === null) {
      // Skipped, not fatal: reconnecting would only replay the same bad event. The entry it
      // was about stays cached until its TTL runs out.
      this.eventErrors++
      return
    }
    if (event.ts !== undefined) this.lastEventLagMs = Math.max(0, receivedAt - event.ts)
    this.emit(event)
  }

  private emit(event: RegistryEvent): void {
    for (const listener of this.listeners.slice()) {
      try {
        listener(event)
      } catch {
        // a listener's bug must not stop the feed for the others
      }
    }
  }

  private backoff(): Promise<void> {
    const ceiling = Math.min(this.backoffMaxMs, this.backoffMinMs * 2 ** Math.min(this.attempts, 30))
    this.attempts++
    // "Full jitter" (AWS architecture blog, "Exponential Backoff And Jitter"), never below the floor.
    const delay = this.backoffMinMs + Math.random() * Math.max(0, ceiling - this.backoffMinMs)
    return new Promise((resolve) => {
      this.backoffWake = resolve
      this.backoffTimer = setTimeout(() => this.wakeBackoff(), delay)
    })
  }

  private wakeBackoff(): void {
    if (this.backoffTimer !== null) clearTimeout(this.backoffTimer)
    this.backoffTimer = null
    const wake = this.backoffWake
    this.backoffWake = null
    wake?.()
  }
}

function parseVersion(id: string): number | null {
  if (id.length === 0 || id.length > 16) return null
  for (let i = 0; i < id.length; i++) {
    const c = id.charCodeAt(i)
    if (c < 0x30 || c > 0x39) return null
  }
  const v = Number(id)
  return Number.isSafeInteger(v) ? v : null
}

function parseEventData(data: string, version: number): (RegistryEvent & { op: 'put' | 'delete' }) | null {
  let body: unknown
  try {
    body = JSON.parse(data)
  } catch {
    return null
  }
  if (typeof body !== 'object' || body === null) return null
  const obj = body as Record<string, unknown>
  const ts = typeof obj.ts === 'number' && Number.isFinite(obj.ts) ? obj.ts : undefined
  if (obj.op === 'put') {
    const server = parseServerEntry(obj.server, 'server')
    if (Array.isArray(server)) return null
    return ts === undefined ? { op: 'put', version, server } : { op: 'put', version, server, ts }
  }
  if (obj.op === 'delete') {
    if (typeof obj.key !== 'string' || keyProblem(obj.key) !== null) return null
    const key = obj.key.toLowerCase()
    return ts === undefined ? { op: 'delete', version, key } : { op: 'delete', version, key, ts }
  }
  return null
}

/** Validates a `GET /servers` answer: `{"version": N, "servers": [...]}`, keys unique. */
export function parseSnapshot(body: unknown): RegistrySnapshot {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new RegistryError('list: answer is not an object')
  }
  const obj = body as Record<string, unknown>
  if (typeof obj.version !== 'number' || !Number.isSafeInteger(obj.version) || obj.version < 0) {
    throw new RegistryError('list: version must be a non-negative integer')
  }
  if (!Array.isArray(obj.servers)) throw new RegistryError('list: servers must be an array')
  const servers: ServerEntry[] = []
  const seen = new Set<string>()
  for (let i = 0; i < obj.servers.length; i++) {
    const entry = parseServerEntry(obj.servers[i], `servers[${i}]`)
    if (Array.isArray(entry)) throw new RegistryError(`list: ${formatFieldErrors(entry)}`)
    if (seen.has(entry.key)) throw new RegistryError(`list: servers[${i}].key: duplicate key ${entry.key}`)
    seen.add(entry.key)
    servers.push(entry)
  }
  return { version: obj.version, servers }
}

async function readBounded(res: Dispatcher.ResponseData, limit: number, what: string): Promise<string> {
  const declared = Number(res.headers['content-length'])
  if (declared > limit) {
    res.body.destroy()
    throw new RegistryError(`${what}: answer of ${declared} bytes is over the ${limit} byte limit`)
  }
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of res.body) {
    size += (chunk as Buffer).length
    if (size > limit) {
      res.body.destroy()
      throw new RegistryError(`${what}: answer is over the ${limit} byte limit`)
    }
    chunks.push(chunk as Buffer)
  }
  return Buffer.concat(chunks, size).toString('utf8')
}

/** Drains a small unwanted body so the connection can be reused; gives up (destroys) past 64 KiB. */
async function discard(body: Dispatcher.ResponseData['body']): Promise<void> {
  try {
    await body.dump({ limit: 64 * 1024 })
  } catch {
    // the connection is dropped instead of reused; nothing else to do
  }
}

function asRegistryError(err: unknown, what: string): RegistryError {
  if (err instanceof RegistryError) return err
  const message = err instanceof Error ? err.message : String(err)
  return new RegistryError(`${what}: ${message}`, { cause: err })
}
