// The soak's traffic, all on 127.0.0.1 and bounded by a fixed number of closed-loop workers
// (each waits for its exchange before starting the next): HTTP on kept-alive and on new
// connections (GET, POST, multi-megabyte downloads), websocket sessions (connect, echo a few
// messages, close), and clients that give up at random moments (half a head, half a body,
// the first chunk of a download, during a websocket handshake, mid-tunnel, right after the
// request, with a reset).
import http from 'node:http'
import net from 'node:net'
import WebSocket, { type RawData } from 'ws'

export interface LoadCounts {
  http: number
  httpByStatus: Record<string, number>
  httpErrors: Record<string, number>
  wsSessions: number
  wsErrors: Record<string, number>
  aborts: Record<string, number>
}

const REQUEST_TIMEOUT_MS = 15_000
/** A client that got an error waits this long before its next try (browsers and IDE clients back off too). */
const ERROR_BACKOFF_MS = 100
const randomInt = (min: number, max: number): number => min + Math.floor(Math.random() * (max - min + 1))
const bump = (table: Record<string, number>, key: string): void => {
  table[key] = (table[key] ?? 0) + 1
}
const pause = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

export interface LoadShape {
  /** HTTP workers on a shared keep-alive agent. */
  readonly keepAlive: number
  /** HTTP workers opening a connection per request (Connection: close). */
  readonly newConnection: number
  readonly websocket: number
  /** Workers that start exchanges and abandon them. */
  readonly aborting: number
}

export class SoakLoad {
  readonly counts: LoadCounts = { http: 0, httpByStatus: {}, httpErrors: {}, wsSessions: 0, wsErrors: {}, aborts: {} }
  private stopped = false
  private workers: Promise<void>[] = []
  private readonly agent = new http.Agent({ keepAlive: true, maxSockets: 64 })
  /** Sockets and websockets in use, so that stop() leaves nothing open. */
  private readonly open = new Set<{ destroy(): void }>()

  constructor(private readonly port: number) {}

  start(shape: LoadShape): void {
    this.stopped = false
    const loop = (body: () => Promise<void>) => (async () => {
      while (!this.stopped) {
        try {
          await body()
        } catch (err) {
          bump(this.counts.httpErrors, `runner: ${(err as Error).message}`)
          await pause(50)
        }
      }
    })()
    const backingOff = (body: () => Promise<boolean>) => async () => {
      if (!(await body())) await pause(ERROR_BACKOFF_MS)
    }
    for (let i = 0; i < shape.keepAlive; i++) this.workers.push(loop(backingOff(() => this.httpExchange(true))))
    for (let i = 0; i < shape.newConnection; i++) this.workers.push(loop(backingOff(() => this.httpExchange(false))))
    for (let i = 0; i < shape.websocket; i++) this.workers.push(loop(backingOff(() => this.wsSession())))
    for (let i = 0; i < shape.aborting; i++) this.workers.push(loop(() => this.abandon()))
  }

  /** Stops every worker after its current exchange and closes every client socket. */
  async stop(): Promise<void> {
    this.stopped = true
    await Promise.all(this.workers)
    this.workers = []
    for (const s of this.open) s.destroy()
    this.open.clear()
    this.agent.destroy()
  }

  // ---- well-behaved clients -----------------------------------------------------------

  /** Resolves true for a 2xx answer read to its end. */
  private httpExchange(keepAlive: boolean): Promise<boolean> {
    const pick = Math.random()
    let method = 'GET'
    let path = '/'
    let body: Buffer | null = null
    if (pick < 0.25) {
      method = 'POST'
      path = '/upload'
      body = Buffer.alloc(randomInt(1, 256 * 1024), 'u')
    } else if (pick < 0.35) {
      path = `/bytes/${randomInt(64 * 1024, 4 * 1024 * 1024)}`
    }
    return new Promise((resolve) => {
      const done = (key: string | null, status?: number): void => {
        this.counts.http++
        if (status !== undefined) bump(this.counts.httpByStatus, String(status))
        if (key !== null) bump(this.counts.httpErrors, key)
        resolve(key === null && status !== undefined && status < 300)
      }
      const req = http.request({
        host: '127.0.0.1',
        port: this.port,
        method,
        path,
        agent: keepAlive ? this.agent : false,
        headers: body === null ? {} : { 'content-length': String(body.length) },
      }, (res) => {
        res.on('data', () => {})
        res.on('end', () => done(null, res.statusCode))
        res.on('error', (err: NodeJS.ErrnoException) => done(err.code ?? err.message, res.statusCode))
      })
      req.setTimeout(REQUEST_TIMEOUT_MS, () => req.destroy(Object.assign(new Error('timeout'), { code: 'TIMEOUT' })))
      let settled = false
      req.on('error', (err: NodeJS.ErrnoException) => {
        if (settled) return
        settled = true
        done(err.code ?? err.message)
      })
      req.on('response', () => (settled = true))
      req.end(body ?? undefined)
    })
  }

  /** Resolves true when the session ran to its clean close. */
  private async wsSession(): Promise<boolean> {
    const ws = new WebSocket(`ws://127.0.0.1:${this.port}/ws`, { perMessageDeflate: false, handshakeTimeout: REQUEST_TIMEOUT_MS })
    const handle = { destroy: () => ws.terminate() }
    this.open.add(handle)
    let failure: string | null = null
    ws.on('error', (err: NodeJS.ErrnoException) => (failure ??= err.code ?? err.message))
    ws.on('unexpected-response', (_req, res) => {
      failure ??= `HTTP_${res.statusCode}`
      res.resume()
      ws.terminate()
    })
    const closed = new Promise<void>((resolve) => ws.once('close', () => resolve()))
    const fail = (code: string) => Object.assign(new Error(code), { code })
    try {
      await Promise.race([
        new Promise<void>((resolve) => ws.once('open', () => resolve())),
        closed.then(() => { throw fail(failure ?? 'CLOSED_BEFORE_OPEN') }),
      ])
      const messages = randomInt(1, 20)
      for (let i = 0; i < messages; i++) {
        const payload = Buffer.alloc(randomInt(1, 16 * 1024), (i % 26) + 97)
        let timer: NodeJS.Timeout | undefined
        const echo = await Promise.race([
          new Promise<RawData>((resolve) => {
            ws.once('message', resolve)
            ws.send(payload)
          }),
          closed.then(() => { throw fail(failure ?? 'CLOSED_MID_SESSION') }),
          new Promise<never>((_resolve, reject) => { timer = setTimeout(() => reject(fail('ECHO_TIMEOUT')), REQUEST_TIMEOUT_MS) }),
        ]).finally(() => clearTimeout(timer))
        if ((echo as Buffer).length !== payload.length) throw fail('BAD_ECHO')
      }
      ws.close(1000)
      await Promise.race([closed, pause(5000)])
      this.counts.wsSessions++
      return true
    } catch (err) {
      bump(this.counts.wsErrors, (err as NodeJS.ErrnoException).code ?? (err as Error).message)
      return false
    } finally {
      ws.terminate()
      this.open.delete(handle)
    }
  }

  // ---- clients that give up ---------------------------------------------------------

  private async abandon(): Promise<void> {
    const kinds = ['partial-head', 'partial-body', 'mid-download', 'before-response', 'reset-after-request', 'mid-handshake', 'mid-tunnel'] as const
    const kind = kinds[randomInt(0, kinds.length - 1)]
    bump(this.counts.aborts, kind)
    if (kind === 'mid-tunnel') return this.abandonTunnel()
    const socket = net.connect({ host: '127.0.0.1', port: this.port })
    this.open.add(socket)
    socket.on('error', () => {})
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once('connect', resolve)
        socket.once('error', reject)
      })
      switch (kind) {
        case 'partial-head':
          socket.write('GET /never HTTP/1.1\r\nHost: soak\r\nX-Half: ')
          await pause(randomInt(0, 50))
          socket.destroy()
          break
        case 'partial-body':
          socket.write(`POST /upload HTTP/1.1\r\nHost: soak\r\nContent-Length: 1048576\r\n\r\n${'p'.repeat(randomInt(1, 256 * 1024))}`)
          await pause(randomInt(0, 50))
          socket.destroy()
          break
        case 'mid-download':
          socket.write(`GET /bytes/${8 * 1024 * 1024} HTTP/1.1\r\nHost: soak\r\n\r\n`)
          await firstData(socket)
          socket.destroy()
          break
        case 'before-response':
          socket.write('GET / HTTP/1.1\r\nHost: soak\r\n\r\n')
          socket.destroy()
          break
        case 'mid-handshake':
          socket.write('GET /ws HTTP/1.1\r\nHost: soak\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
            'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n')
          await pause(randomInt(0, 5))
          socket.destroy()
          break
        case 'reset-after-request':
          socket.write(`GET /bytes/${1024 * 1024} HTTP/1.1\r\nHost: soak\r\n\r\n`)
          await pause(randomInt(0, 5))
          socket.resetAndDestroy()
          break
      }
    } catch {
      // The gateway refusing or resetting an abandoned exchange is part of the point.
    } finally {
      socket.destroy()
      this.open.delete(socket)
    }
  }

  private async abandonTunnel(): Promise<void> {
    const ws = new WebSocket(`ws://127.0.0.1:${this.port}/ws`, { perMessageDeflate: false, handshakeTimeout: REQUEST_TIMEOUT_MS })
    const handle = { destroy: () => ws.terminate() }
    this.open.add(handle)
    ws.on('error', () => {})
    try {
      await new Promise<void>((resolve, reject) => {
        ws.once('open', () => resolve())
        ws.once('close', () => reject(new Error('closed')))
      })
      ws.send(Buffer.alloc(randomInt(1, 64 * 1024), 't'))
      await pause(randomInt(0, 20))
    } catch {
      // as above
    } finally {
      ws.terminate()
      this.open.delete(handle)
    }
  }
}

function firstData(socket: net.Socket): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, REQUEST_TIMEOUT_MS)
    socket.once('data', () => {
      clearTimeout(timer)
      resolve()
    })
    socket.once('close', () => {
      clearTimeout(timer)
      resolve()
    })
  })
}
