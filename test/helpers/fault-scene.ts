// The stage for a fault-injection scenario: a gateway with a healthy route (`/healthy`, to a
// well-behaved upstream) and a route for everything else to the target(s) under test, plus a
// SurvivalCheck already running. And a raw client that reports exactly how a response ended.

import http from 'node:http'
import net from 'node:net'
import { once } from 'node:events'
import { startGateway, type TestGateway } from './gateway.js'
import { SurvivalCheck } from './survival-check.js'
import { httpUpstream, type TestServer } from './upstream.js'

export interface FaultScene {
  gw: TestGateway
  check: SurvivalCheck
  healthy: TestServer<http.Server>
  port: number
  close(): Promise<void>
}

/**
 * `faulty`: the targets of the `faulty` upstream (route "/"). `extra` is merged over the
 * gateway config; `upstream` over the faulty upstream's settings. Pooled upstream
 * connections idle out after 100 ms so descriptors settle quickly after each scenario.
 */
export async function faultScene(faulty: string[], extra: Record<string, unknown> = {}, upstream: Record<string, unknown> = {}): Promise<FaultScene> {
  const healthy = await httpUpstream((req, res) => {
    req.resume()
    req.on('end', () => res.end('ok'))
  })
  const { timeouts, ...rest } = extra as { timeouts?: Record<string, unknown> }
  let gw: TestGateway
  try {
    gw = await startGateway({
      upstreams: {
        healthy: { targets: [healthy.target] },
        faulty: { targets: faulty, maxFails: 1000, cooldownMs: 1000, ...upstream },
      },
      routes: [
        { id: 'healthy', pathPrefix: '/healthy', upstream: 'healthy' },
        { id: 'faulty', pathPrefix: '/', upstream: 'faulty' },
      ],
      timeouts: { responseMs: 1000, upstreamIdleMs: 100, ...timeouts },
      ...rest,
    })
  } catch (err) {
    await healthy.close()
    throw err
  }
  const check = await SurvivalCheck.start(gw)
  return {
    gw,
    check,
    healthy,
    port: gw.port(),
    async close() {
      check.dispose()
      await gw.close()
      await healthy.close()
    },
  }
}

export interface RawOutcome {
  /** Everything received. */
  bytes: Buffer
  /** The socket error code (ECONNRESET for a reset), or null. */
  error: string | null
  /** A FIN arrived (the peer ended cleanly). */
  ended: boolean
}

export interface RawConversation {
  socket: net.Socket
  /** Resolves once the received bytes satisfy `test`. */
  until(test: (received: Buffer) => boolean, timeoutMs?: number): Promise<Buffer>
  /** Resolves when the socket has closed, with how. */
  outcome: Promise<RawOutcome>
  /** `outcome`, or a rejection naming what arrived when the socket is still open after `timeoutMs`. */
  closed(timeoutMs?: number): Promise<RawOutcome>
}

/** Opens a raw connection to the gateway and writes `data` (when given). */
export async function rawConversation(port: number, data?: string | Buffer, opts: { allowHalfOpen?: boolean } = {}): Promise<RawConversation> {
  const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: opts.allowHalfOpen ?? false })
  const chunks: Buffer[] = []
  let size = 0
  let error: string | null = null
  let ended = false
  const waiters = new Set<() => void>()
  socket.on('data', (d: Buffer) => {
    chunks.push(d)
    size += d.length
    for (const w of [...waiters]) w()
  })
  socket.on('end', () => (ended = true))
  socket.on('error', (err: NodeJS.ErrnoException) => (error = err.code ?? err.message))
  const outcome = new Promise<RawOutcome>((resolve) => socket.on('close', () => {
    for (const w of [...waiters]) w()
    resolve({ bytes: Buffer.concat(chunks, size), error, ended })
  }))
  await once(socket, 'connect')
  if (data !== undefined) socket.write(data)
  const until = (test: (received: Buffer) => boolean, timeoutMs = 5000): Promise<Buffer> => new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      waiters.delete(check)
      reject(new Error(`timed out; got ${size} bytes: ${JSON.stringify(Buffer.concat(chunks).toString('latin1').slice(0, 300))}`))
    }, timeoutMs)
    const check = (): void => {
      const all = Buffer.concat(chunks, size)
      if (test(all)) {
        clearTimeout(timer)
        waiters.delete(check)
        resolve(all)
      } else if (socket.destroyed) {
        clearTimeout(timer)
        waiters.delete(check)
        reject(new Error(`closed early; got ${size} bytes: ${JSON.stringify(all.toString('latin1').slice(0, 300))}`))
      }
    }
    waiters.add(check)
    check()
  })
  const closed = (timeoutMs = 5000): Promise<RawOutcome> => new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      const head = Buffer.concat(chunks, size).toString('latin1').slice(0, 200)
      reject(new Error(`the connection was still open after ${timeoutMs} ms; got ${size} bytes${ended ? ' and a FIN' : ''}: ${JSON.stringify(head)}`))
    }, timeoutMs)
    void outcome.then((o) => {
      clearTimeout(timer)
      resolve(o)
    })
  })
  return { socket, until, outcome, closed }
}

/** A node:http GET through the gateway: how the response ended for a real HTTP client. */
export function httpGet(port: number, path: string): Promise<{ status: number; bytes: number; how: 'end' | 'aborted' | 'error'; error?: string }> {
  return new Promise((resolve) => {
    let status = 0
    let bytes = 0
    let settled = false
    const settle = (how: 'end' | 'aborted' | 'error', error?: string): void => {
      if (settled) return
      settled = true
      resolve({ status, bytes, how, error })
    }
    const req = http.get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      status = res.statusCode ?? 0
      res.on('data', (d: Buffer) => (bytes += d.length))
      res.on('end', () => settle('end'))
      res.on('aborted', () => settle('aborted'))
      res.on('error', (err: NodeJS.ErrnoException) => settle('error', err.code ?? err.message))
    })
    // node:http reports a connection lost mid-body on the request too, before 'aborted'.
    req.on('error', (err: NodeJS.ErrnoException) => settle('error', err.code ?? err.message))
  })
}

/**
 * One request on its own connection (node:http without an agent, so no socket outlives the
 * exchange and the descriptor count stays comparable): status, x-gateway-error, body.
 */
export function request(port: number, path: string, init: { method?: string; body?: string | Buffer; headers?: Record<string, string> } = {}): Promise<{ status: number; code: string | null; text: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, method: init.method ?? 'GET', headers: init.headers, agent: false }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (d: Buffer) => chunks.push(d))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, code: (res.headers['x-gateway-error'] as string | undefined) ?? null, text: Buffer.concat(chunks).toString('utf8') }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end(init.body)
  })
}
