// The embedded registry (config `workspaces.registry.url: null`): workspace servers put and
// deleted through the admin API, persisted in the state file, and served with the same
// protocol as the master's registry (contract: "Registry protocol") so other gateways can
// follow this one with a RegistryClient.
//
// Versions are the state file's document version (RegistryStore bumps it once per committed
// mutation, including the admin API's route changes, so event ids can have gaps). A ring of
// the last `ringSize` events answers `GET /events?since=V`; an older `since`, or one from the
// future (the state file was replaced), gets `event: reset`.

import type { IncomingMessage, ServerResponse } from 'node:http'
import type { RegistryEvent, RegistrySnapshot, RegistrySource, RegistrySourceState } from './registry-source.js'
import { parseJsonBytes } from '../config/parse-json.js'
import { readBody, sendErrors, sendJson } from '../control-http.js'
import { RegistryStore } from './registry-store.js'
import { keyProblem, parseServerEntry } from './server-entry.js'
import type { FieldError, ServerEntry } from './server-entry.js'

export interface EmbeddedRegistryOptions {
  /** Events kept for `since=` resumption. Default 10000. */
  readonly ringSize?: number
  /** Interval of the `: keepalive` comment on open event streams, ms. Default 15000. */
  readonly keepaliveMs?: number
  /** Largest accepted `PUT /servers/{key}` body, bytes. Default 64 KiB. */
  readonly maxBodyBytes?: number
  /** Extra rule for targets put through the API: why a target is refused, or null. */
  readonly targetRule?: (target: string) => string | null
  /** An event stream whose unsent backlog grows past this is dropped (the follower resumes with since=), bytes. Default 4 MiB. */
  readonly maxStreamBufferBytes?: number
}

type Listener = (event: RegistryEvent) => void

interface LoggedEvent {
  readonly version: number
  /** The SSE frame, serialized once for every stream. */
  readonly frame: string
}

const SSE_HEADERS = {
  'content-type': 'text/event-stream; charset=utf-8',
  'cache-control': 'no-store',
  // reverse proxies in front of the admin listener must not buffer the stream
  'x-accel-buffering': 'no',
}

export class EmbeddedRegistry implements RegistrySource {
  private readonly map = new Map<string, ServerEntry>()
  private readonly ring: (LoggedEvent | undefined)[]
  private ringStart = 0
  private ringCount = 0
  /** Events with a version above this are all in the ring. */
  private ringBase: number
  private readonly listeners: Listener[] = []
  private readonly streams = new Set<ServerResponse>()
  private keepaliveTimer: NodeJS.Timeout | null = null
  private lastEventAt: number | null = null
  private closed = false
  private readonly keepaliveMs: number
  private readonly maxBodyBytes: number
  private readonly maxStreamBufferBytes: number
  private readonly targetRule: ((target: string) => string | null) | undefined

  constructor(readonly store: RegistryStore, options: EmbeddedRegistryOptions = {}) {
    for (const entry of store.document.servers) this.map.set(entry.key, entry)
    this.ring = new Array<LoggedEvent | undefined>(Math.max(1, options.ringSize ?? 10_000))
    this.ringBase = store.document.version
    this.keepaliveMs = options.keepaliveMs ?? 15_000
    this.maxBodyBytes = options.maxBodyBytes ?? 64 * 1024
    this.maxStreamBufferBytes = options.maxStreamBufferBytes ?? 4 * 1024 * 1024
    this.targetRule = options.targetRule
  }

  /** Opens the state file (see RegistryStore.open for its errors) and builds the registry on it. */
  static async open(stateFile: string, options?: EmbeddedRegistryOptions): Promise<EmbeddedRegistry> {
    return new EmbeddedRegistry(await RegistryStore.open(stateFile), options)
  }

  get version(): number {
    return this.store.document.version
  }

  get size(): number {
    return this.map.size
  }

  /** Synchronous and authoritative: every entry lives in this process. */
  get(key: string): ServerEntry | null {
    return this.map.get(key) ?? null
  }

  lookup(key: string): Promise<ServerEntry | null> {
    return Promise.resolve(this.map.get(key) ?? null)
  }

  list(): Promise<RegistrySnapshot> {
    return Promise.resolve({ version: this.version, servers: [...this.map.values()] })
  }

  subscribe(listener: Listener): () => void {
    this.listeners.push(listener)
    return () => {
      const i = this.listeners.indexOf(listener)
      if (i >= 0) this.listeners.splice(i, 1)
    }
  }

  state(): RegistrySourceState {
    return {
      connected: !this.closed,
      lastVersion: this.version,
      lastEventAt: this.lastEventAt,
      lastEventLagMs: this.lastEventAt === null ? null : 0,
      lookupErrors: 0,
      streamErrors: 0,
      eventErrors: 0,
    }
  }

  /**
   * Stores `entry` (already validated with parseServerEntry) once it is durable. Putting an
   * identical entry again changes nothing and makes no event.
   */
  async put(entry: ServerEntry): Promise<{ entry: ServerEntry; version: number }> {
    const key = entry.key
    const version = await this.store.update((draft) => {
      const i = draft.servers.findIndex((s) => s.key === key)
      if (i >= 0 && sameEntry(draft.servers[i], entry)) return false
      const servers = draft.servers.slice()
      if (i >= 0) servers[i] = entry
      else servers.push(entry)
      draft.servers = servers
    }, (_doc, committed) => {
      const previous = this.map.get(key) ?? null
      this.map.set(key, entry)
      this.record({ op: 'put', version: committed, server: entry, previous, ts: Date.now() })
    })
    return { entry: this.map.get(key) ?? entry, version }
  }

  /** Removes `key` once durable; false when it was not there. */
  async delete(key: string): Promise<boolean> {
    let found = false
    await this.store.update((draft) => {
      const i = draft.servers.findIndex((s) => s.key === key)
      if (i < 0) return false
      found = true
      const servers = draft.servers.slice()
      servers.splice(i, 1)
      draft.servers = servers
    }, (_doc, committed) => {
      const previous = this.map.get(key) ?? null
      this.map.delete(key)
      this.record({ op: 'delete', version: committed, key, previous, ts: Date.now() })
    })
    return found
  }

  /**
   * Serves the registry protocol: `GET /servers`, `GET|PUT|DELETE /servers/{key}`,
   * `GET /events?since=V`. `pathname` is the request path as received (percent-encoded), with
   * whatever mount prefix the caller strips already removed. Returns false, without touching
   * `res`, for a path it does not own. Authentication is the caller's job.
   */
  handleRegistryRequest(req: IncomingMessage, res: ServerResponse, pathname: string, search: URLSearchParams): boolean {
    if (pathname === '/servers') {
      if (req.method === 'GET' || req.method === 'HEAD') {
        sendJson(res, 200, { version: this.version, servers: [...this.map.values()] })
      } else {
        methodNotAllowed(res, 'GET, HEAD')
      }
      return true
    }
    if (pathname === '/events') {
      if (req.method === 'GET') this.serveEvents(req, res, search)
      else methodNotAllowed(res, 'GET')
      return true
    }
    if (!pathname.startsWith('/servers/')) return false
    const raw = pathname.slice('/servers/'.length)
    if (raw.includes('/')) return false
    let key: string
    try {
      key = decodeURIComponent(raw)
    } catch {
      sendErrors(res, 400, [{ path: 'key', message: 'is not valid percent-encoding' }])
      return true
    }
    const problem = keyProblem(key)
    if (problem !== null) {
      sendErrors(res, 400, [{ path: 'key', message: problem }])
      return true
    }
    key = key.toLowerCase()
    switch (req.method) {
      case 'GET':
      case 'HEAD': {
        const entry = this.map.get(key)
        if (entry === undefined) sendErrors(res, 404, [{ path: 'key', message: `no server with key ${key}` }])
        else sendJson(res, 200, entry)
        break
      }
      case 'PUT':
        this.handlePut(req, res, key).catch((err: unknown) => sendFailure(res, err))
        break
      case 'DELETE':
        this.handleDelete(req, res, key).catch((err: unknown) => sendFailure(res, err))
        break
      default:
        methodNotAllowed(res, 'GET, HEAD, PUT, DELETE')
    }
    return true
  }

  /** Ends every event stream and stops the keepalive timer. Pending writes still complete (see store.idle()). */
  close(): void {
    this.closed = true
    this.stopKeepalive()
    for (const res of this.streams) res.end()
    this.streams.clear()
    this.listeners.length = 0
  }

  private async handlePut(req: IncomingMessage, res: ServerResponse, key: string): Promise<void> {
    const body = await this.readWholeBody(req, res)
    if (body === null) return
    // The admin API's JSON reader: UTF-8 only, no duplicate keys, positions in errors.
    const parsed = parseJsonBytes(body)
    if (!parsed.ok) {
      sendErrors(res, 400, [{ path: parsed.issue.path || '$', message: parsed.issue.message }])
      return
    }
    let value = parsed.value
    if (typeof value === 'object' && value !== null && !Array.isArray(value) && (value as { key?: unknown }).key === undefined) {
      value = { ...value, key }
    }
    const entry = parseServerEntry(value, '')
    if (Array.isArray(entry)) {
      sendErrors(res, 400, entry)
      return
    }
    if (entry.key !== key) {
      sendErrors(res, 400, [{ path: 'key', message: `${JSON.stringify(entry.key)} does not match the key in the URL (${key})` }])
      return
    }
    const targetProblem = this.targetRule?.(entry.target) ?? null
    if (targetProblem !== null) {
      sendErrors(res, 400, [{ path: 'target', message: targetProblem }])
      return
    }
    const stored = await this.put(entry)
    sendJson(res, 200, stored.entry)
  }

  /** The request body, or null once a 413 is answered for one over maxBodyBytes. */
  private async readWholeBody(req: IncomingMessage, res: ServerResponse): Promise<Buffer | null> {
    const body = await readBody(req, this.maxBodyBytes)
    if (body === null) sendErrors(res, 413, [{ path: '$', message: `body larger than ${this.maxBodyBytes} bytes` }], { connection: 'close' })
    return body
  }

  private async handleDelete(req: IncomingMessage, res: ServerResponse, key: string): Promise<void> {
    // Whatever body comes is ignored, but it must come whole before anything changes: a request
    // cut short gets an error, and must not have deleted anything.
    if (await this.readWholeBody(req, res) === null) return
    if (await this.delete(key)) sendJson(res, 200, { deleted: key, version: this.version })
    else sendErrors(res, 404, [{ path: 'key', message: `no server with key ${key}` }])
  }

  private serveEvents(req: IncomingMessage, res: ServerResponse, search: URLSearchParams): void {
    const sinceText = search.get('since')
    let backlog: string[] | null = []
    if (sinceText !== null) {
      const since = /^\d{1,16}$/.test(sinceText) ? Number(sinceText) : NaN
      if (!Number.isSafeInteger(since)) {
        sendErrors(res, 400, [{ path: 'since', message: 'must be a non-negative integer' }])
        return
      }
      backlog = this.framesSince(since)
    }
    req.socket.setNoDelay(true)
    // The stream is long-lived by design; keepalives, not socket timeouts, detect dead peers.
    req.socket.setTimeout(0)
    res.writeHead(200, SSE_HEADERS)
    // Headers now, not with the first event: the follower counts itself connected on them.
    res.flushHeaders()
    if (backlog === null) {
      res.write(`event: reset\nid: ${this.version}\ndata: {"version":${this.version}}\n\n`)
    } else {
      for (const frame of backlog) res.write(frame)
    }
    if (this.closed) {
      res.end()
      return
    }
    this.streams.add(res)
    res.on('close', () => {
      this.streams.delete(res)
      if (this.streams.size === 0) this.stopKeepalive()
    })
    this.startKeepalive()
  }

  /** The frames after `since`, or null when the ring no longer (or never) covers it. */
  private framesSince(since: number): string[] | null {
    if (since > this.version || since < this.ringBase) return null
    const frames: string[] = []
    // newest first until `since`, then reversed: a follower is usually only a little behind
    for (let n = this.ringCount - 1; n >= 0; n--) {
      const event = this.ring[(this.ringStart + n) % this.ring.length] as LoggedEvent
      if (event.version <= since) break
      frames.push(event.frame)
    }
    return frames.reverse()
  }

  private record(event: RegistryEvent & { op: 'put' | 'delete' }): void {
    this.lastEventAt = Date.now()
    const data = event.op === 'put'
      ? { op: 'put', server: event.server, ts: event.ts }
      : { op: 'delete', key: event.key, ts: event.ts }
    const logged: LoggedEvent = { version: event.version, frame: `id: ${event.version}\ndata: ${JSON.stringify(data)}\n\n` }
    if (this.ringCount < this.ring.length) {
      this.ring[(this.ringStart + this.ringCount) % this.ring.length] = logged
      this.ringCount++
    } else {
      this.ringBase = (this.ring[this.ringStart] as LoggedEvent).version
      this.ring[this.ringStart] = logged
      this.ringStart = (this.ringStart + 1) % this.ring.length
    }
    for (const res of this.streams) {
      if (res.writableLength > this.maxStreamBufferBytes) {
        // A follower that cannot keep up is cut loose; it resumes with since= (or gets a reset).
        res.destroy()
        continue
      }
      res.write(logged.frame)
    }
    for (const listener of this.listeners.slice()) {
      try {
        listener(event)
      } catch {
        // a listener's bug must not stop the others or undo the committed change
      }
    }
  }

  private startKeepalive(): void {
    if (this.keepaliveTimer !== null) return
    this.keepaliveTimer = setInterval(() => {
      for (const res of this.streams) res.write(': keepalive\n\n')
    }, this.keepaliveMs)
    this.keepaliveTimer.unref()
  }

  private stopKeepalive(): void {
    if (this.keepaliveTimer !== null) clearInterval(this.keepaliveTimer)
    this.keepaliveTimer = null
  }
}

function sameEntry(a: ServerEntry, b: ServerEntry): boolean {
  return a.key === b.key && a.target === b.target && a.workspaceId === b.workspaceId && a.server === b.server
}


function methodNotAllowed(res: ServerResponse, allow: string): void {
  res.setHeader('allow', allow)
  sendErrors(res, 405, [{ path: 'method', message: `must be one of ${allow}` }])
}

function sendFailure(res: ServerResponse, err: unknown): void {
  const message = err instanceof Error ? err.message : String(err)
  sendErrors(res, 500, [{ path: '$', message: `could not store the change: ${message}` }])
}
