// Start-up and shutdown (issue 2, item 9): a port that cannot be bound fails the start with a
// message an operator can act on, and a drain closes idle connections at once, lets requests
// in flight finish, refuses new connections and closes tunnels when the grace runs out. The
// test scope fails any test during which something threw uncaught.

import { once } from 'node:events'
import type http from 'node:http'
import net from 'node:net'
import { describe, expect, it } from 'vitest'
import WebSocket, { WebSocketServer } from 'ws'
import { startGateway, type TestGateway } from '../helpers/gateway.js'
import { finalResponse } from '../helpers/http-bytes.js'
import { exchange, socketClosed, useTestScope, within } from '../helpers/test-scope.js'
import { httpUpstream, type TestServer, freePort } from '../helpers/upstream.js'

const scope = useTestScope()

async function occupy(): Promise<number> {
  const s = net.createServer()
  s.listen(0, '127.0.0.1')
  await once(s, 'listening')
  scope.defer(() => new Promise((r) => s.close(r)))
  return (s.address() as net.AddressInfo).port
}

describe('start-up', () => {
  it('refuses to start when a listener port is taken, naming the listener, the port, the reason and the fix', async () => {
    const taken = await occupy()
    let error: Error | null = null
    try {
      const gw = await startGateway({
        listeners: [{ name: 'front-door', port: taken, host: '127.0.0.1' }],
        upstreams: { up: { targets: ['127.0.0.1:9'] } },
        routes: [{ id: 'all', pathPrefix: '/', upstream: 'up' }],
      })
      scope.defer(() => gw.close())
    } catch (err) {
      error = err as Error
    }
    expect(error, 'Gateway.start rejects').not.toBeNull()
    const message = error!.message
    expect(message).toContain('front-door')
    expect(message).toContain(String(taken))
    expect(message).toContain('EADDRINUSE')
    expect(message).toMatch(/fix/i)
  })

  it('releases the ports it did bind when a later listener cannot bind', async () => {
    const taken = await occupy()
    const first = await freePort()
    await expect(startGateway({
      listeners: [{ name: 'first', port: first, host: '127.0.0.1' }, { name: 'second', port: taken, host: '127.0.0.1' }],
      upstreams: { up: { targets: ['127.0.0.1:9'] } },
      routes: [{ id: 'all', pathPrefix: '/', upstream: 'up' }],
    })).rejects.toThrow(/second/)
    // The first listener's port is free again.
    const probe = net.createServer()
    probe.listen(first, '127.0.0.1')
    await once(probe, 'listening')
    await new Promise((r) => probe.close(r))
  })
})

describe('drain', () => {
  interface Slow {
    up: TestServer<http.Server>
    gw: TestGateway
    /** Resolves when the upstream has a request in hand. */
    arrived: Promise<void>
    /** Lets the held request answer. */
    release(): void
    requests: string[]
  }

  async function slowSetup(config: Record<string, unknown> = {}): Promise<Slow> {
    let onArrive: () => void = () => {}
    const arrived = new Promise<void>((r) => { onArrive = r })
    let release: () => void = () => {}
    const released = new Promise<void>((r) => { release = r })
    const requests: string[] = []
    const up = await httpUpstream(async (req, res) => {
      requests.push(req.url ?? '')
      if (req.url === '/slow') {
        res.writeHead(200, { 'content-type': 'text/plain' })
        res.write('part one, ')
        onArrive()
        await released
        res.end('part two')
      } else {
        res.end(req.url)
      }
    })
    scope.defer(() => up.close())
    const gw = await scope.gateway(up.target, { timeouts: { shutdownGraceMs: 3000 }, ...config })
    scope.defer(() => release())
    return { up, gw, arrived, release, requests }
  }

  it('closes idle keep-alive connections at once', async () => {
    const { gw } = await slowSetup()
    const client = scope.client(gw.port())
    client.socket.write('GET /fast HTTP/1.1\r\nHost: h\r\n\r\n')
    const first = await client.waitFor('/fast')
    const started = Date.now()
    const drained = gw.gw.drain()
    const end = await within(socketClosed(client.socket), 1000, 'the idle connection to close')
    expect(Date.now() - started).toBeLessThan(500)
    expect(end.error).toBeNull()
    expect(client.received()).toBe(first)
    await within(drained, 1000, 'the drain to finish with nothing in flight')
  })

  it('lets a request in flight finish, refuses new connections meanwhile, then closes', async () => {
    const slow = await slowSetup()
    const port = slow.gw.port()
    const client = scope.client(port)
    client.socket.write('GET /slow HTTP/1.1\r\nHost: h\r\n\r\n')
    await within(slow.arrived, 2000, 'the slow request upstream')
    await client.waitFor('part one, ')
    let drainDone = false
    const drained = slow.gw.gw.drain().then(() => { drainDone = true })
    // A new connection is refused (or answered 503 over_capacity) and reaches nobody.
    const late = await lateConnection(port)
    if (late.refused !== true) expect({ status: late.status, code: late.code }).toEqual({ status: 503, code: 'over_capacity' })
    expect(slow.requests).toEqual(['/slow'])
    expect(drainDone).toBe(false)
    slow.release()
    const raw = await client.waitFor('part two')
    const res = finalResponse(raw)
    expect(res.status).toBe(200)
    expect(res.body).toBe('part one, part two')
    expect(res.complete).toBe(true)
    await within(socketClosed(client.socket), 1000, 'the client connection to close after its last response')
    await within(drained, 2000, 'the drain to finish')
  })

  it('cuts a request still in flight when timeouts.shutdownGraceMs runs out', async () => {
    const shutdownGraceMs = 400
    const slow = await slowSetup({ timeouts: { shutdownGraceMs } })
    const client = scope.client(slow.gw.port())
    client.socket.write('GET /slow HTTP/1.1\r\nHost: h\r\n\r\n')
    await within(slow.arrived, 2000, 'the slow request upstream')
    await client.waitFor('part one, ')
    const started = Date.now()
    const drained = slow.gw.gw.drain()
    await within(socketClosed(client.socket), shutdownGraceMs + 2000, 'the client connection to be cut')
    const elapsed = Date.now() - started
    expect(elapsed).toBeGreaterThanOrEqual(shutdownGraceMs - 100)
    expect(elapsed).toBeLessThan(shutdownGraceMs + 1000)
    expect(finalResponse(client.received()).complete).toBe(false)
    await within(drained, 2000, 'the drain to finish')
  })

  it('keeps an open websocket tunnel working during the grace and closes it when timeouts.shutdownGraceMs runs out', async () => {
    const shutdownGraceMs = 500
    const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' })
    await once(wss, 'listening')
    scope.defer(() => new Promise((r) => { for (const c of wss.clients) c.terminate(); wss.close(r) }))
    const upstreamClosed: Promise<unknown>[] = []
    wss.on('connection', (ws, req) => {
      ws.on('error', () => {})
      upstreamClosed.push(once(req.socket, 'close'))
      ws.on('message', (m, binary) => ws.send(m, { binary }))
    })
    const gw = await scope.gateway(`127.0.0.1:${(wss.address() as net.AddressInfo).port}`, { timeouts: { shutdownGraceMs } })
    const client = new WebSocket(`ws://127.0.0.1:${gw.port()}/pty`)
    client.on('error', () => {})
    scope.defer(() => client.terminate())
    await within(once(client, 'open'), 2000, 'the tunnel')
    const closed = once(client, 'close')
    const started = Date.now()
    const drained = gw.gw.drain()
    // Still working during the grace.
    const reply = once(client, 'message') as Promise<[Buffer]>
    client.send('still here')
    expect(String((await within(reply, 1000, 'an echo during the grace'))[0])).toBe('still here')
    await within(closed, shutdownGraceMs + 2000, 'the tunnel to close at the end of the grace')
    const elapsed = Date.now() - started
    expect(elapsed).toBeGreaterThanOrEqual(shutdownGraceMs - 100)
    expect(elapsed).toBeLessThan(shutdownGraceMs + 1000)
    await within(Promise.all(upstreamClosed), 1000, 'the upstream socket of the tunnel to close')
    await within(drained, 2000, 'the drain to finish')
  })

  it('answers nothing wrong and throws nothing when drain is called twice and then close', async () => {
    const { gw } = await slowSetup()
    const ex = await exchange(gw.port(), 'GET /fast HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n')
    expect(finalResponse(ex.raw).body).toBe('/fast')
    const a = gw.gw.drain()
    const b = gw.gw.drain()
    await within(Promise.all([a, b]), 2000, 'both drains')
    await gw.gw.close()
  })
})

/** Connects during a drain: either refused outright, or answered; reports which. */
async function lateConnection(port: number): Promise<{ refused: boolean; status?: number; code?: string }> {
  const socket = net.connect(port, '127.0.0.1')
  const result = await new Promise<{ refused: boolean; raw?: string }>((resolve) => {
    const chunks: Buffer[] = []
    socket.on('error', (e: NodeJS.ErrnoException) => resolve({ refused: e.code === 'ECONNREFUSED' || e.code === 'ECONNRESET', raw: Buffer.concat(chunks).toString('latin1') }))
    socket.on('connect', () => socket.write('GET /late HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n'))
    socket.on('data', (d: Buffer) => chunks.push(d))
    socket.on('close', () => resolve({ refused: chunks.length === 0, raw: Buffer.concat(chunks).toString('latin1') }))
  })
  socket.destroy()
  if (result.refused || result.raw === undefined || result.raw.length === 0) return { refused: true }
  const res = finalResponse(result.raw)
  return { refused: false, status: res.status, code: res.get('x-gateway-error') }
}
