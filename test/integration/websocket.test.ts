// Websocket tunnels (issue 2, item 6): opened only on a 101 with the right
// Sec-WebSocket-Accept, any other answer relayed as is and both sockets closed, bytes both
// ways with backpressure, and no socket outliving its partner (close, error, idle timeout).

import { once } from 'node:events'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import type { IncomingMessage } from 'node:http'
import type net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import WebSocket, { WebSocketServer } from 'ws'
import { createCertificates } from '../../src/listeners/certificate-authority.js'
import type { TestGateway } from '../helpers/gateway.js'
import { finalResponse } from '../helpers/http-bytes.js'
import { recordingUpstream, type RecordingUpstream, type Responder } from '../helpers/recording-upstream.js'
import { socketClosed, useTestScope, waitUntil, within } from '../helpers/test-scope.js'

const scope = useTestScope()

// The gateway's deadlines run on a coarse clock (src/timers.ts, 250 ms sweeps), so a deadline
// may fire up to one sweep early; the lower bound only rules out a wrong (much shorter) timeout.
const COARSE_MS = 260

const KEY = 'dGhlIHNhbXBsZSBub25jZQ=='
const ACCEPT = 's3pPLMBiTxaQ9kYGzzhZRbK+xOo='
const UPGRADE = (path = '/ws'): string =>
  `GET ${path} HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${KEY}\r\n\r\n`

interface ServerSide {
  ws: WebSocket
  req: IncomingMessage
  /** The upstream's TCP socket closed. */
  socketClosed: Promise<unknown>
}

interface WsUpstream {
  target: string
  wss: WebSocketServer
  /** Server-side connections in accept order. */
  conns: ServerSide[]
}

/** A `ws` server on port 0 that echoes every message (unless `onConnection` takes over). */
async function wsUpstream(onConnection?: (s: ServerSide) => void): Promise<WsUpstream> {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1', handleProtocols: (protocols) => [...protocols][0] ?? false })
  await once(wss, 'listening')
  const conns: ServerSide[] = []
  wss.on('connection', (ws, req) => {
    ws.on('error', () => {})
    const socket = req.socket
    const s: ServerSide = { ws, req, socketClosed: socket.destroyed ? Promise.resolve() : once(socket, 'close') }
    conns.push(s)
    if (onConnection !== undefined) onConnection(s)
    else ws.on('message', (m, binary) => ws.send(m, { binary }))
  })
  scope.defer(() => new Promise((r) => { for (const c of wss.clients) c.terminate(); wss.close(r) }))
  const port = (wss.address() as net.AddressInfo).port
  return {
    target: `127.0.0.1:${port}`,
    wss,
    conns,
  }
}

async function openClient(url: string, options: WebSocket.ClientOptions = {}, protocols: string[] = []): Promise<WebSocket> {
  const ws = new WebSocket(url, protocols, options)
  ws.on('error', () => {})
  scope.defer(() => ws.terminate())
  await within(once(ws, 'open'), 3000, `websocket open to ${url}`)
  return ws
}

async function roundTrip(ws: WebSocket, data: string | Buffer): Promise<{ data: Buffer; binary: boolean }> {
  const reply = once(ws, 'message') as Promise<[Buffer, boolean]>
  ws.send(data, { binary: typeof data !== 'string' })
  const [d, binary] = await within(reply, 2000, 'the echo')
  return { data: d, binary }
}

async function rawUpgradeUpstream(respond: Responder): Promise<RecordingUpstream> {
  const up = await recordingUpstream(respond)
  scope.defer(() => up.close())
  return up
}

describe('tunnels', () => {
  it('echoes text and binary messages both ways through the HTTP listener, keeping path, query and subprotocol', async () => {
    const up = await wsUpstream()
    const gw = await scope.gateway(up.target)
    const client = await openClient(`ws://127.0.0.1:${gw.port()}/pty?token=t`, {}, ['v1.terminal'])
    expect(client.protocol).toBe('v1.terminal')
    const text = await roundTrip(client, 'ls -la\n')
    expect([text.data.toString(), text.binary]).toEqual(['ls -la\n', false])
    const bin = Buffer.from([0, 1, 2, 255, 254])
    const b = await roundTrip(client, bin)
    expect(b.binary).toBe(true)
    expect(b.data.equals(bin)).toBe(true)
    const big = Buffer.alloc(300_000, 7)
    expect((await roundTrip(client, big)).data.equals(big)).toBe(true)
    const server = up.conns[0]
    expect(server.req.url).toBe('/pty?token=t')
    expect(server.req.headers['x-forwarded-proto']).toBe('http')
    // Server-initiated traffic reaches the client too.
    const pushed = once(client, 'message') as Promise<[Buffer]>
    server.ws.send('from the server')
    expect(String((await within(pushed, 2000, 'a server push'))[0])).toBe('from the server')
  })

  it('echoes messages through an HTTPS listener with a certificate from createCertificates', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gw-ws-tls-'))
    scope.defer(() => rmSync(dir, { recursive: true, force: true }))
    const files = await createCertificates({ outDir: dir, hosts: ['localhost', '127.0.0.1'] })
    const up = await wsUpstream()
    const gw = await scope.gateway(up.target, {
      listeners: [{ name: 'https', port: 0, host: '127.0.0.1', tls: { cert: files.cert, key: files.key } }],
    })
    const client = await openClient(`wss://localhost:${gw.port('https')}/wsagent`, { ca: readFileSync(files.caCert) })
    expect((await roundTrip(client, 'over tls')).data.toString()).toBe('over tls')
    const bin = Buffer.alloc(100_000, 3)
    expect((await roundTrip(client, bin)).data.equals(bin)).toBe(true)
    expect(up.conns[0].req.headers['x-forwarded-proto']).toBe('https')
  })

  it('passes bytes the upstream sent right behind its 101 to the client', async () => {
    const up = await rawUpgradeUpstream((_req, socket) => {
      socket.write(Buffer.from(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${ACCEPT}\r\n\r\n\x81\x02hi`, 'latin1'))
    })
    const gw = await scope.gateway(up.target)
    const client = scope.client(gw.port())
    client.socket.write(UPGRADE())
    const raw = await client.waitFor('\x81\x02hi')
    expect(raw).toMatch(/^HTTP\/1\.1 101 /)
    expect(raw.endsWith('\r\n\r\n\x81\x02hi')).toBe(true)
  })

  it('passes bytes the client sent right behind its upgrade request to the upstream once the tunnel opens', async () => {
    const up = await rawUpgradeUpstream((_req, socket) => {
      socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${ACCEPT}\r\n\r\n`)
    })
    const gw = await scope.gateway(up.target)
    const client = scope.client(gw.port())
    client.socket.write(`${UPGRADE()}EARLY-FRAME-BYTES`)
    await client.waitFor('101')
    await waitUntil(() => up.connections[0]?.received.toString('latin1').endsWith('\r\n\r\nEARLY-FRAME-BYTES'), 2000, 'the early bytes upstream')
  })

  it('tunnels an upgrade whose Connection header also says keep-alive (as Firefox sends it)', async () => {
    const up = await rawUpgradeUpstream((_req, socket) => {
      socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${ACCEPT}\r\n\r\n`)
    })
    const gw = await scope.gateway(up.target)
    const client = scope.client(gw.port())
    client.socket.write(`GET /ws HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${KEY}\r\n\r\n`)
    const raw = await client.waitFor('\r\n\r\n')
    expect(raw).toMatch(/^HTTP\/1\.1 101 /)
    const req = up.requests[0]
    expect(req.get('upgrade')?.toLowerCase()).toBe('websocket')
    expect(req.get('sec-websocket-key')).toBe(KEY)
  })
})

describe('refused and bogus handshakes', () => {
  it('answers 502 upstream_unreachable to an upgrade whose upstream refuses connections', async () => {
    const probe = await recordingUpstream()
    const target = probe.target
    await probe.close()
    const gw = await scope.gateway(target)
    const client = scope.client(gw.port())
    client.socket.write(UPGRADE())
    await within(socketClosed(client.socket), 2000, 'the client connection to close')
    const res = finalResponse(client.received())
    expect({ status: res.status, code: res.get('x-gateway-error') }).toEqual({ status: 502, code: 'upstream_unreachable' })
  })

  it('relays an upstream 403 with its body exactly, then closes both sockets', async () => {
    const up = await rawUpgradeUpstream((_req, socket) => {
      socket.write('HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nX-Reason: no-token\r\nContent-Length: 9\r\n\r\nforbidden')
    })
    const gw = await scope.gateway(up.target)
    const client = scope.client(gw.port())
    client.socket.write(UPGRADE('/pty'))
    await within(socketClosed(client.socket), 2000, 'the client connection to close after the 403')
    const res = finalResponse(client.received())
    expect(res.status).toBe(403)
    expect(res.get('content-type')).toBe('text/plain')
    expect(res.get('x-reason')).toBe('no-token')
    expect(res.get('x-gateway-error')).toBeUndefined()
    expect(res.rawBody).toBe('forbidden')
    expect(client.received().endsWith('\r\n\r\nforbidden')).toBe(true)
    await within(up.connections[0].closedPromise, 1000, 'the upstream socket to close after the 403')
  })

  it('relays an upstream 403 whose body runs until the upstream closes', async () => {
    const up = await rawUpgradeUpstream((_req, socket) => {
      socket.end('HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\n\r\ngo away')
    })
    const gw = await scope.gateway(up.target)
    const client = scope.client(gw.port())
    client.socket.write(UPGRADE('/pty'))
    await within(socketClosed(client.socket), 2000, 'the client connection to close')
    const res = finalResponse(client.received())
    expect(res.status).toBe(403)
    expect(res.body).toBe('go away')
  })

  it('tells a ws client about the refusal (unexpected-response 403)', async () => {
    const up = await rawUpgradeUpstream((_req, socket) => {
      socket.write('HTTP/1.1 403 Forbidden\r\nContent-Length: 9\r\n\r\nforbidden')
    })
    const gw = await scope.gateway(up.target)
    const ws = new WebSocket(`ws://127.0.0.1:${gw.port()}/pty`)
    ws.on('error', () => {})
    scope.defer(() => ws.terminate())
    const [, res] = await within(once(ws, 'unexpected-response') as Promise<[unknown, IncomingMessage]>, 2000, 'the refusal')
    expect(res.statusCode).toBe(403)
    let body = ''
    for await (const c of res) body += String(c)
    expect(body).toBe('forbidden')
  })

  const BOGUS_101: [string, string][] = [
    ['a wrong Sec-WebSocket-Accept', 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n'],
    ['no Sec-WebSocket-Accept', 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n'],
    ['two Sec-WebSocket-Accept headers', `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${ACCEPT}\r\nSec-WebSocket-Accept: ${ACCEPT}\r\n\r\n`],
    ['an upgrade to another protocol', `HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${ACCEPT}\r\n\r\n`],
    ['no Connection: upgrade', `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: ${ACCEPT}\r\n\r\n`],
  ]

  it.each(BOGUS_101)('answers 502 upstream_bad_response to a 101 with %s and opens no tunnel', async (_name, bytes) => {
    const up = await rawUpgradeUpstream((_req, socket) => socket.write(bytes))
    const gw = await scope.gateway(up.target)
    const client = scope.client(gw.port())
    client.socket.write(UPGRADE())
    await within(socketClosed(client.socket), 2000, 'the client connection to close')
    const res = finalResponse(client.received())
    expect({ status: res.status, code: res.get('x-gateway-error') }).toEqual({ status: 502, code: 'upstream_bad_response' })
    expect(client.received()).not.toMatch(/^HTTP\/1\.1 101/m)
    await within(up.connections[0].closedPromise, 1000, 'the upstream socket to close')
    expect(gw.gw.engine.tunnels.size).toBe(0)
  })
})

describe('no socket outlives its partner', () => {
  it('closes the upstream socket promptly when the client vanishes', async () => {
    const up = await wsUpstream()
    const gw = await scope.gateway(up.target)
    const client = await openClient(`ws://127.0.0.1:${gw.port()}/pty`)
    await roundTrip(client, 'x')
    const started = Date.now()
    client.terminate()
    await within(up.conns[0].socketClosed, 1000, 'the upstream socket to close')
    expect(Date.now() - started).toBeLessThan(1000)
    await waitUntil(() => gw.gw.engine.tunnels.size === 0, 1000, 'the tunnel to be forgotten')
  })

  it('closes both sides when the client closes the websocket cleanly', async () => {
    const up = await wsUpstream()
    const gw = await scope.gateway(up.target)
    const client = await openClient(`ws://127.0.0.1:${gw.port()}/pty`)
    await roundTrip(client, 'x')
    const closed = once(client, 'close')
    client.close(1000, 'bye')
    const [code] = await within(closed, 2000, 'the client close') as [number]
    expect(code).toBe(1000)
    await within(up.conns[0].socketClosed, 2000, 'the upstream socket to close')
  })

  it('closes the client promptly when the upstream vanishes', async () => {
    const up = await wsUpstream()
    const gw = await scope.gateway(up.target)
    const client = await openClient(`ws://127.0.0.1:${gw.port()}/pty`)
    await roundTrip(client, 'x')
    const closed = once(client, 'close')
    const started = Date.now()
    up.conns[0].ws.terminate()
    await within(closed, 1000, 'the client to close')
    expect(Date.now() - started).toBeLessThan(1000)
  })

  it('closes an idle tunnel after timeouts.tunnelIdleMs, both sides', async () => {
    const tunnelIdleMs = 500
    const up = await wsUpstream()
    const gw = await scope.gateway(up.target, { timeouts: { tunnelIdleMs } })
    const client = await openClient(`ws://127.0.0.1:${gw.port()}/pty`)
    const opened = Date.now()
    await within(once(client, 'close'), tunnelIdleMs + 2000, 'the idle tunnel to close')
    const idle = Date.now() - opened
    expect(idle).toBeGreaterThanOrEqual(tunnelIdleMs - COARSE_MS)
    expect(idle).toBeLessThan(tunnelIdleMs + 1000)
    await within(up.conns[0].socketClosed, 1000, 'the upstream socket of the idle tunnel to close')
  })

  it('keeps a tunnel with traffic open past timeouts.tunnelIdleMs', async () => {
    const tunnelIdleMs = 600
    const up = await wsUpstream()
    const gw = await scope.gateway(up.target, { timeouts: { tunnelIdleMs } })
    const client = await openClient(`ws://127.0.0.1:${gw.port()}/pty`)
    let closed = false
    client.on('close', () => { closed = true })
    const started = Date.now()
    // A message every 100 ms for twice the idle timeout.
    while (Date.now() - started < tunnelIdleMs * 2) {
      await roundTrip(client, 'keepalive')
      await new Promise((r) => setTimeout(r, 100))
    }
    expect(closed).toBe(false)
    expect(up.conns[0].ws.readyState).toBe(WebSocket.OPEN)
  })
})

describe('backpressure', () => {
  it('holds the upstream back while the client does not read, without buffering in the gateway', async () => {
    const MESSAGE = Buffer.alloc(1024 * 1024, 0x61)
    const MAX_MESSAGES = 64
    let sent = 0
    let lastProgress = Date.now()
    let maxBuffered = 0
    let gwRef: TestGateway | null = null
    const up = await wsUpstream((s) => {
      s.ws.on('message', () => {
        // The client asks for the stream: send messages one after another, each when the
        // previous one has been handed to the kernel.
        const pump = (): void => {
          if (sent >= MAX_MESSAGES || s.ws.readyState !== WebSocket.OPEN) return
          s.ws.send(MESSAGE, { binary: true }, () => {
            sent++
            lastProgress = Date.now()
            if (gwRef !== null) maxBuffered = Math.max(maxBuffered, tunnelBuffered(gwRef))
            setImmediate(pump)
          })
        }
        pump()
      })
    })
    const gw = await scope.gateway(up.target)
    gwRef = gw
    const client = await openClient(`ws://127.0.0.1:${gw.port()}/stream`)
    let received = 0
    client.on('message', (m: Buffer) => { received += m.length })
    client.pause()
    client.send('go')
    // No event says "the sender is stuck": poll until it made no progress for a while.
    await waitUntil(() => sent > 0 && Date.now() - lastProgress > 300, 8000, 'the upstream to be held back', 50)
    const stalledAt = sent
    expect(stalledAt, 'messages the upstream could send while the client read nothing').toBeLessThan(MAX_MESSAGES)
    expect(maxBuffered, 'bytes the gateway buffered in the tunnel at most').toBeLessThan(2 * 1024 * 1024)
    expect(tunnelBuffered(gw)).toBeLessThan(2 * 1024 * 1024)
    client.resume()
    await waitUntil(() => received === MAX_MESSAGES * MESSAGE.length, 10_000, 'every message to arrive', 20)
    expect(sent).toBe(MAX_MESSAGES)
  })
})

/** Bytes queued in user space on both sockets of every open tunnel. */
function tunnelBuffered(gw: TestGateway): number {
  let n = 0
  for (const t of gw.gw.engine.tunnels) {
    n += (t.client as net.Socket).writableLength + (t.upstream as net.Socket).writableLength
    n += (t.client as net.Socket).readableLength + (t.upstream as net.Socket).readableLength
  }
  return n
}
