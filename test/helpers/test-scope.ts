// Per-file test scaffolding: everything a test opens is registered here and closed in
// afterEach (last opened, first closed), and any uncaught exception or unhandled rejection
// during a test fails it ("no error, from either side, ever crashes the process").

import { once } from 'node:events'
import net from 'node:net'
import { afterAll, afterEach, beforeAll, expect } from 'vitest'
import { startGateway, type TestGateway } from './gateway.js'
import { rawClient } from './upstream.js'

export interface TestScope {
  /** Runs `fn` in afterEach (reverse order of registration). */
  defer(fn: () => unknown): void
  /** A gateway with one catch-all route to `target`, closed after the test. */
  gateway(target: string, config?: Record<string, unknown>): Promise<TestGateway>
  /** A raw client (see helpers/upstream.ts rawClient), destroyed after the test. */
  client(port: number): ReturnType<typeof rawClient>
  /** A connected raw socket, destroyed after the test. */
  connect(port: number): Promise<net.Socket>
  /**
   * Two connected loopback sockets, both destroyed after the test: `local`, the accepted side
   * (half-open, as the gateway's are), for the code under test; `peer` for the test to read.
   */
  socketPair(): Promise<{ local: net.Socket; peer: net.Socket }>
}

export function useTestScope(): TestScope {
  const cleanups: (() => unknown)[] = []
  const crashes: unknown[] = []
  const onCrash = (err: unknown): void => { crashes.push(err) }
  beforeAll(() => {
    process.on('uncaughtException', onCrash)
    process.on('unhandledRejection', onCrash)
  })
  afterAll(() => {
    process.off('uncaughtException', onCrash)
    process.off('unhandledRejection', onCrash)
  })
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) {
      try {
        await c()
      } catch {
        // cleanup is best effort; a failure here must not hide the test's own result
      }
    }
    await new Promise((r) => setImmediate(r))
    expect(crashes.splice(0).map(String), 'uncaught exceptions or unhandled rejections').toEqual([])
  })
  const scope: TestScope = {
    defer: (fn) => { cleanups.push(fn) },
    async gateway(target, config = {}) {
      const gw = await startGateway({
        upstreams: { up: { targets: [target] } },
        routes: [{ id: 'all', pathPrefix: '/', upstream: 'up' }],
        ...config,
      })
      cleanups.push(() => gw.close())
      return gw
    },
    client(port) {
      const c = rawClient(port)
      cleanups.push(() => c.socket.destroy())
      return c
    },
    async connect(port) {
      const s = net.connect(port, '127.0.0.1')
      s.on('error', () => {})
      cleanups.push(() => s.destroy())
      await once(s, 'connect')
      return s
    },
    async socketPair() {
      const server = net.createServer({ allowHalfOpen: true })
      server.listen(0, '127.0.0.1')
      await once(server, 'listening')
      cleanups.push(() => new Promise((r) => server.close(r)))
      const accepted = once(server, 'connection') as Promise<[net.Socket]>
      const peer = await scope.connect((server.address() as net.AddressInfo).port)
      const [local] = await accepted
      cleanups.push(() => local.destroy())
      return { local, peer }
    },
  }
  return scope
}

/** Polls `check` until it returns truthy; for conditions no event announces. */
export async function waitUntil<T>(check: () => T | Promise<T>, timeoutMs: number, what: string, everyMs = 20): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const v = await check()
    if (v) return v
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((r) => setTimeout(r, everyMs))
  }
}

export interface SocketEnd {
  /** ms from the call to the close. */
  elapsedMs: number
  /** The error code the socket saw before closing (ECONNRESET for a reset), or null. */
  error: string | null
}

/** Resolves when `socket` closes, or rejects after `timeoutMs`. */
export function socketClosed(socket: net.Socket, timeoutMs = 5000): Promise<SocketEnd> {
  const started = Date.now()
  let error: string | null = null
  socket.on('error', (e: NodeJS.ErrnoException) => { error = e.code ?? e.message })
  // A socket nobody reads from never sees the FIN: read (and drop) so the close can arrive.
  if (socket.listenerCount('data') === 0) socket.resume()
  return new Promise((resolve, reject) => {
    if (socket.destroyed && socket.closed) {
      resolve({ elapsedMs: 0, error })
      return
    }
    const timer = setTimeout(() => reject(new Error(`socket still open after ${timeoutMs} ms`)), timeoutMs)
    socket.once('close', () => {
      clearTimeout(timer)
      resolve({ elapsedMs: Date.now() - started, error })
    })
  })
}

/** Resolves with `p`, or rejects naming `what` after `ms`. */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => { timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms) }),
  ])
}

export interface Exchange {
  /** Everything received, latin1. */
  raw: string
  /** The gateway closed the connection (false: we gave up after timeoutMs). */
  closed: boolean
  /** ms from the write to the close (or the give-up). */
  elapsedMs: number
  /** The socket error seen (ECONNRESET for a reset), or null. */
  error: string | null
}

/** Writes `data` on a new connection and collects what comes back until the gateway closes it. */
export async function exchange(port: number, data: string | Buffer, timeoutMs = 3000): Promise<Exchange> {
  const socket = net.connect(port, '127.0.0.1')
  let error: string | null = null
  socket.on('error', (e: NodeJS.ErrnoException) => { error = e.code ?? e.message })
  const chunks: Buffer[] = []
  socket.on('data', (d: Buffer) => chunks.push(d))
  await once(socket, 'connect')
  const started = Date.now()
  socket.write(data)
  let closed = true
  await new Promise<void>((resolve) => {
    const timer = setTimeout(() => { closed = false; resolve() }, timeoutMs)
    socket.once('close', () => { clearTimeout(timer); resolve() })
  })
  const elapsedMs = Date.now() - started
  socket.destroy()
  return { raw: Buffer.concat(chunks).toString('latin1'), closed, elapsedMs, error }
}

/** Whether a TCP connect to `port` on 127.0.0.1 is refused (nothing listens there). */
export function connectionRefused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port })
    s.once('connect', () => { s.destroy(); resolve(false) })
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'ECONNREFUSED'))
  })
}
