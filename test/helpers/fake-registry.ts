// A fake master registry: a real node:http server on port 0 serving the registry protocol
// (contract: "Registry protocol"), with knobs to misbehave the ways a real master can: go
// down, answer garbage, stall, break an event stream mid-event.

import { createServer } from 'node:http'
import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { ServerEntry } from '../../src/registry/server-entry.js'

/** How lookups (`GET /servers/{key}`) and lists are answered. */
export type AnswerMode =
  | 'ok'
  | 'invalid-json'
  | 'wrong-shape'
  | 'wrong-key'
  | 'status-500'
  | 'huge'
  | 'huge-chunked'
  | 'hang'
  | 'trickle'

interface LoggedEvent {
  readonly version: number
  readonly frame: string
}

export class FakeRegistry {
  readonly servers = new Map<string, ServerEntry>()
  version = 0
  /** Events older than this version are forgotten: `since` below it gets a reset. */
  oldestSince = 0
  mode: AnswerMode = 'ok'
  /** Delay before any answer, ms. */
  delayMs = 0
  /** Lookups per key. */
  readonly lookups = new Map<string, number>()
  /** The `since` of every `/events` request (null when absent). */
  readonly eventRequests: (string | null)[] = []
  readonly authorizations: (string | undefined)[] = []
  listRequests = 0
  /** In 'trickle' mode, one byte of the answer every this many ms, for ever. */
  trickleMs = 20

  private readonly log: LoggedEvent[] = []
  private readonly streams = new Set<ServerResponse>()
  private readonly sockets = new Set<Socket>()
  private readonly hanging = new Set<ServerResponse>()
  private readonly trickling = new Set<ServerResponse>()
  private server: Server
  private port = 0

  private constructor() {
    this.server = this.makeServer()
  }

  static async start(): Promise<FakeRegistry> {
    const fake = new FakeRegistry()
    await fake.listen(0)
    return fake
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`
  }

  get openStreams(): number {
    return this.streams.size
  }

  /** Answers being trickled whose connection is still open. */
  get openTrickles(): number {
    return this.trickling.size
  }

  lookupCount(key: string): number {
    return this.lookups.get(key) ?? 0
  }

  /** Changes an entry and tells the event streams (`ts` included when given). */
  put(entry: ServerEntry, ts?: number): number {
    this.servers.set(entry.key, entry)
    return this.publish({ op: 'put', server: entry, ...(ts === undefined ? {} : { ts }) })
  }

  delete(key: string): number {
    this.servers.delete(key)
    return this.publish({ op: 'delete', key })
  }

  /** Sets an entry without an event (a change the gateway can only learn by asking). */
  setSilently(entry: ServerEntry): void {
    this.servers.set(entry.key, entry)
  }

  /** Sends raw bytes to every open event stream. */
  sendRaw(text: string): void {
    for (const res of this.streams) res.write(text)
  }

  /** Sends `event: reset` to every open stream. */
  sendReset(): void {
    this.sendRaw(`event: reset\nid: ${this.version}\ndata: {}\n\n`)
  }

  /**
   * Publishes the next version's event, but every open stream gets only its first half before
   * its connection is destroyed. The event is in the log, so a resumed stream gets it whole.
   */
  breakStreamsMidEvent(entry: ServerEntry): number {
    this.servers.set(entry.key, entry)
    this.version++
    const frame = `id: ${this.version}\ndata: ${JSON.stringify({ op: 'put', server: entry })}\n\n`
    this.log.push({ version: this.version, frame })
    for (const res of this.streams) {
      const socket = res.socket
      res.write(frame.slice(0, frame.length - 10), () => socket?.destroy())
    }
    return this.version
  }

  /** Goes down: stops listening (connections are refused) and destroys every open socket. */
  async down(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()))
    for (const socket of this.sockets) socket.destroy()
    this.streams.clear()
    this.hanging.clear()
    this.trickling.clear()
    await closed
  }

  /** Comes back on the same port. */
  async up(): Promise<void> {
    this.server = this.makeServer()
    await this.listen(this.port)
  }

  async close(): Promise<void> {
    if (!this.server.listening) return
    await this.down()
  }

  private makeServer(): Server {
    const server = createServer((req, res) => this.handle(req, res))
    server.keepAliveTimeout = 60_000
    server.on('connection', (socket) => {
      this.sockets.add(socket)
      socket.on('close', () => this.sockets.delete(socket))
    })
    return server
  }

  private listen(port: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject)
      this.server.listen(port, '127.0.0.1', () => {
        this.server.off('error', reject)
        const address = this.server.address()
        if (address !== null && typeof address === 'object') this.port = address.port
        resolve()
      })
    })
  }

  private publish(data: unknown): number {
    this.version++
    const frame = `id: ${this.version}\ndata: ${JSON.stringify(data)}\n\n`
    this.log.push({ version: this.version, frame })
    for (const res of this.streams) res.write(frame)
    return this.version
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    this.authorizations.push(req.headers.authorization)
    const url = new URL(req.url ?? '/', 'http://x')
    if (url.pathname.startsWith('/servers/')) {
      // counted on arrival, before any delay
      const key = decodeURIComponent(url.pathname.slice(9))
      this.lookups.set(key, (this.lookups.get(key) ?? 0) + 1)
    }
    const answer = (): void => {
      if (url.pathname === '/events') this.serveEvents(url, res)
      else if (url.pathname === '/servers') this.serveList(res)
      else if (url.pathname.startsWith('/servers/')) this.serveLookup(decodeURIComponent(url.pathname.slice(9)), res)
      else this.send(res, 404, '{}')
    }
    if (this.delayMs > 0) {
      const timer = setTimeout(answer, this.delayMs)
      res.on('close', () => clearTimeout(timer))
    } else {
      answer()
    }
  }

  private serveEvents(url: URL, res: ServerResponse): void {
    const since = url.searchParams.get('since')
    this.eventRequests.push(since)
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    res.flushHeaders()
    const from = since === null ? this.version : Number(since)
    if (from < this.oldestSince || from > this.version) {
      res.write(`event: reset\nid: ${this.version}\ndata: {}\n\n`)
    } else {
      for (const event of this.log) if (event.version > from) res.write(event.frame)
    }
    this.streams.add(res)
    res.on('close', () => this.streams.delete(res))
  }

  private serveList(res: ServerResponse): void {
    this.listRequests++
    if (this.misbehave(res)) return
    this.send(res, 200, JSON.stringify({ version: this.version, servers: [...this.servers.values()] }))
  }

  private serveLookup(key: string, res: ServerResponse): void {
    if (this.misbehave(res)) return
    const entry = this.servers.get(key)
    if (entry === undefined) {
      this.send(res, 404, '{"error":"not found"}')
      return
    }
    if (this.mode === 'wrong-key') {
      this.send(res, 200, JSON.stringify({ ...entry, key: 'someone-else' }))
      return
    }
    this.send(res, 200, JSON.stringify(entry))
  }

  /** Answers per `mode` unless it is 'ok' or 'wrong-key'; true when it answered. */
  private misbehave(res: ServerResponse): boolean {
    switch (this.mode) {
      case 'invalid-json':
        this.send(res, 200, '{"key": "32770_node1", "target": ')
        return true
      case 'wrong-shape':
        this.send(res, 200, '{"key": 42, "target": ["node1", 32770]}')
        return true
      case 'status-500':
        this.send(res, 500, 'Internal Server Error')
        return true
      case 'huge':
        this.send(res, 200, `{"key":"x","target":"node1:1","pad":"${'x'.repeat(2 * 1024 * 1024)}"}`)
        return true
      case 'huge-chunked':
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end(`{"key":"x","target":"node1:1","pad":"${'x'.repeat(2 * 1024 * 1024)}"}`)
        return true
      case 'hang':
        this.hanging.add(res)
        return true
      case 'trickle': {
        // A 200 that never ends: a byte every trickleMs, so no silence-based timeout fires.
        res.writeHead(200, { 'content-type': 'application/json' })
        res.write('{"version":0,"servers":[],"pad":"')
        const timer = setInterval(() => res.write('x'), this.trickleMs)
        this.trickling.add(res)
        res.on('close', () => {
          clearInterval(timer)
          this.trickling.delete(res)
        })
        return true
      }
      default:
        return false
    }
  }

  private send(res: ServerResponse, status: number, body: string): void {
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
    res.end(body)
  }
}

/** Polls `check` until it returns a truthy value or `timeoutMs` passes. */
export async function waitFor<T>(check: () => T | Promise<T>, timeoutMs = 3000, what = 'condition'): Promise<T> {
  const deadline = performance.now() + timeoutMs
  for (;;) {
    const value = await check()
    if (value) return value
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
}
