// Upstream servers for tests: a node:http server with a handler, and a raw TCP server that
// answers with exactly the bytes a test gives it.

import http from 'node:http'
import net from 'node:net'
import { once } from 'node:events'

export interface TestServer<S> {
  server: S
  port: number
  target: string
  /** Connections accepted so far. */
  connections: number
  close(): Promise<void>
}

export async function httpUpstream(handler: http.RequestListener): Promise<TestServer<http.Server>> {
  const server = http.createServer(handler)
  const t = await listen(server)
  server.on('connection', (s) => t.track(s))
  return t
}

/**
 * Binds `server` on 127.0.0.1:0 and returns its TestServer; `track` counts and remembers a
 * connection so `close()` can end it.
 */
async function listen<S extends net.Server>(server: S): Promise<TestServer<S> & { sockets: Set<net.Socket>; track(s: net.Socket): void }> {
  const sockets = new Set<net.Socket>()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const port = (server.address() as net.AddressInfo).port
  const t = {
    server,
    port,
    target: `127.0.0.1:${port}`,
    connections: 0,
    sockets,
    track(s: net.Socket) {
      t.connections++
      sockets.add(s)
      s.on('close', () => sockets.delete(s))
    },
    async close() {
      for (const s of sockets) s.destroy()
      await new Promise((r) => server.close(r))
    },
  }
  return t
}

/** A raw upstream: `onSocket` gets each connection and the first chunk of bytes. */
export async function rawUpstream(onRequest: (socket: net.Socket, data: Buffer) => void): Promise<TestServer<net.Server> & { sockets: Set<net.Socket> }> {
  const server = net.createServer((s) => {
    t.track(s)
    s.on('error', () => {})
    let buf = Buffer.alloc(0)
    s.on('data', (d) => {
      buf = Buffer.concat([buf, d])
      if (buf.includes('\r\n\r\n')) {
        const b = buf
        buf = Buffer.alloc(0)
        onRequest(s, b)
      }
    })
  })
  const t = await listen(server)
  return t
}

/** Sends raw bytes and collects everything until the gateway closes the connection. */
export async function rawExchange(port: number, data: string | Buffer, opts: { endAfterWrite?: boolean; timeoutMs?: number } = {}): Promise<string> {
  const socket = net.connect(port, '127.0.0.1')
  socket.on('error', () => {})
  const chunks: Buffer[] = []
  socket.on('data', (d) => chunks.push(d))
  await once(socket, 'connect')
  socket.write(data)
  if (opts.endAfterWrite) socket.end()
  const timer = setTimeout(() => socket.destroy(), opts.timeoutMs ?? 5000)
  await once(socket, 'close')
  clearTimeout(timer)
  return Buffer.concat(chunks).toString('latin1')
}

/** Sends raw bytes and resolves with the first complete response head (and what followed). */
export function rawClient(port: number): { socket: net.Socket; received: () => string; waitFor: (s: string | RegExp, timeoutMs?: number) => Promise<string> } {
  const socket = net.connect(port, '127.0.0.1')
  socket.on('error', () => {})
  let data = ''
  const waiters: (() => void)[] = []
  socket.on('data', (d) => {
    data += d.toString('latin1')
    for (const w of waiters.splice(0)) w()
  })
  socket.on('close', () => { for (const w of waiters.splice(0)) w() })
  const waitFor = (s: string | RegExp, timeoutMs = 5000): Promise<string> => new Promise((resolve, reject) => {
    const deadline = setTimeout(() => reject(new Error(`timed out waiting for ${s}; got ${JSON.stringify(data)}`)), timeoutMs)
    const check = (): void => {
      if (typeof s === 'string' ? data.includes(s) : s.test(data)) {
        clearTimeout(deadline)
        resolve(data)
      } else if (socket.destroyed) {
        clearTimeout(deadline)
        reject(new Error(`closed before ${s}; got ${JSON.stringify(data)}`))
      } else {
        waiters.push(check)
      }
    }
    check()
  })
  return { socket, received: () => data, waitFor }
}

/**
 * A port nothing listens on (bound, then released): for a connection that must be refused,
 * or a fixed port to configure before something binds it.
 */
export async function freePort(): Promise<number> {
  const s = net.createServer().listen(0, '127.0.0.1')
  await once(s, 'listening')
  const port = (s.address() as net.AddressInfo).port
  await new Promise((r) => s.close(r))
  return port
}
