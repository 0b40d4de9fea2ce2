// Clients that vanish: mid-request (partial head, partial body, while waiting for the
// answer), mid-response, during a websocket handshake and mid-tunnel. The upstream side of
// each exchange must be closed too, and every scenario passes the survival check (process
// alive, healthy route served throughout, no descriptor or gateway state left behind).

import { once } from 'node:events'
import http from 'node:http'
import net from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import WebSocket, { WebSocketServer } from 'ws'
import { waitFor } from '../helpers/fake-registry.js'
import { faultScene, rawConversation, request, type FaultScene } from '../helpers/fault-scene.js'
import { httpUpstream, type TestServer } from '../helpers/upstream.js'

const cleanups: (() => Promise<unknown> | void)[] = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

async function scene(up: TestServer<http.Server>): Promise<FaultScene> {
  const s = await faultScene([up.target])
  cleanups.push(() => s.close())
  return s
}

/** An upstream that records how each request ended. */
async function watchedUpstream(handler: http.RequestListener) {
  const seen = { requests: 0, bodyBytes: 0, aborted: 0, responsesClosedEarly: 0 }
  const up = await httpUpstream((req, res) => {
    seen.requests++
    req.on('data', (d: Buffer) => (seen.bodyBytes += d.length))
    req.on('close', () => { if (!req.complete) seen.aborted++ })
    res.on('close', () => { if (!res.writableFinished) seen.responsesClosedEarly++ })
    handler(req, res)
  })
  cleanups.push(() => up.close())
  return { up, seen }
}

/** Writes `total` bytes as fast as the socket takes them, honouring backpressure. */
function stream(res: http.ServerResponse, total: number): void {
  const chunk = Buffer.alloc(65536, 'x')
  res.writeHead(200, { 'content-length': String(total) })
  let sent = 0
  const pump = (): void => {
    while (sent < total && !res.destroyed) {
      const n = Math.min(chunk.length, total - sent)
      sent += n
      if (!res.write(n === chunk.length ? chunk : chunk.subarray(0, n))) {
        res.once('drain', pump)
        return
      }
    }
    if (sent >= total) res.end()
  }
  pump()
}

describe('a client that vanishes mid-request', () => {
  it('forgets a connection that sent half a head and vanished; the upstream never hears of it', async () => {
    const { up, seen } = await watchedUpstream((_req, res) => res.end('never'))
    const s = await scene(up)
    const client = await rawConversation(s.port, 'GET /app HTTP/1.1\r\nHost: app\r\nX-Half: ')
    await waitFor(() => s.gw.gw.engine.connections.size >= 1)
    client.socket.destroy()
    await client.closed()
    expect(seen.requests).toBe(0)
    expect(up.connections).toBe(0)
    await s.check.finish()
  })

  it.each(['vanishes', 'half-closes'])('closes the upstream request when the client %s in the middle of a body', async (how) => {
    const { up, seen } = await watchedUpstream((req, res) => {
      req.resume()
      req.on('end', () => res.end('done'))
    })
    const s = await scene(up)
    const client = await rawConversation(s.port, `POST /upload HTTP/1.1\r\nHost: app\r\nContent-Length: 1000000\r\n\r\n${'b'.repeat(100_000)}`)
    await waitFor(() => seen.bodyBytes >= 100_000, 3000, 'the first body bytes upstream')
    if (how === 'vanishes') client.socket.destroy()
    else client.socket.end()
    const out = await client.closed()
    if (how === 'half-closes') expect(out.bytes.toString('latin1')).toMatch(/^HTTP\/1\.1 400 .*x-gateway-error: bad_request/s)
    await waitFor(() => seen.aborted === 1, 3000, 'the upstream request aborted')
    await s.check.finish()
  })

  it('closes the upstream connection at once when the client resets while the response is awaited', async () => {
    const { up, seen } = await watchedUpstream(() => {}) // never answers
    const s = await scene(up)
    const client = await rawConversation(s.port, 'GET /slow HTTP/1.1\r\nHost: app\r\n\r\n')
    await waitFor(() => seen.requests === 1, 3000, 'the request upstream')
    client.socket.resetAndDestroy()
    await waitFor(() => seen.responsesClosedEarly === 1, 500, 'the upstream response closed')
    await s.check.finish()
  })

  // A FIN after a complete request is a half-close, not a hang-up (RFC 9112 section 9.6):
  // the answer is still awaited, but no longer than responseMs (as HAProxy without
  // "option abortonclose").
  it('closes the upstream connection by responseMs when the client sends a FIN while the response is awaited', async () => {
    const { up, seen } = await watchedUpstream(() => {}) // never answers
    const s = await scene(up)
    const client = await rawConversation(s.port, 'GET /slow HTTP/1.1\r\nHost: app\r\n\r\n')
    await waitFor(() => seen.requests === 1, 3000, 'the request upstream')
    client.socket.destroy()
    await waitFor(() => seen.responsesClosedEarly === 1, 2000, 'the upstream response closed')
    await s.check.finish()
  })
})

describe('a client that gives up on the trial request of a recovering target', () => {
  // After a cool-down, exactly one request tries the target again (target.ts, available());
  // its outcome must decide, whatever happens to the client that sent it. Here that request
  // is abandoned while its upstream connection is still connecting: a malformed chunked body
  // that arrived with the head makes the gateway drop the exchange in the same turn.
  it('does not keep the target out of rotation when the trial request is dropped while connecting', async () => {
    const s0 = net.createServer().listen(0, '127.0.0.1')
    await once(s0, 'listening')
    const port = (s0.address() as net.AddressInfo).port
    await new Promise((r) => s0.close(r))
    const s = await faultScene([`127.0.0.1:${port}`], {}, { maxFails: 1, cooldownMs: 200 })
    cleanups.push(() => s.close())
    expect((await request(s.port, '/app')).code).toBe('upstream_unreachable')
    const revived = http.createServer((_req, res) => res.end('back')).listen(port, '127.0.0.1')
    cleanups.push(() => new Promise((r) => revived.close(r)))
    await once(revived, 'listening')
    await new Promise((r) => setTimeout(r, 300)) // the cool-down is over: the next request is the trial
    const trial = await rawConversation(s.port, 'POST /app HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n')
    const out = await trial.closed()
    expect(out.bytes.toString('latin1')).toMatch(/^HTTP\/1\.1 400 /)
    await waitFor(async () => (await request(s.port, '/app')).text === 'back', 3000, 'the target back in rotation')
    await s.check.finish()
  })
})

describe('a client that vanishes mid-response', () => {
  it('closes the upstream socket when the client goes after the first chunk of a large response', async () => {
    const { up, seen } = await watchedUpstream((_req, res) => stream(res, 64 * 1024 * 1024))
    const s = await scene(up)
    const client = await rawConversation(s.port, 'GET /big HTTP/1.1\r\nHost: app\r\n\r\n')
    await client.until((b) => b.length > 65536)
    client.socket.destroy()
    await waitFor(() => seen.responsesClosedEarly === 1, 3000, 'the upstream response closed')
    await s.check.finish()
  })
})

describe('a client that vanishes from a websocket', () => {
  async function wsUpstream(delay101Ms = 0) {
    const up = await httpUpstream((_req, res) => res.end('not a websocket request'))
    const wss = new WebSocketServer({ noServer: true })
    const seen = { handshakes: 0, answered: 0, opened: 0, closed: 0, sockets: new Set<WebSocket>() }
    up.server.on('upgrade', (req, socket, head) => {
      seen.handshakes++
      socket.on('error', () => {})
      setTimeout(() => {
        seen.answered++
        wss.handleUpgrade(req, socket, head, (ws) => {
          seen.opened++
          seen.sockets.add(ws)
          ws.on('message', (m, binary) => ws.send(m, { binary }))
          ws.on('error', () => {})
          ws.on('close', () => seen.closed++)
        })
      }, delay101Ms)
    })
    cleanups.push(async () => {
      for (const ws of seen.sockets) ws.terminate()
      wss.close()
      await up.close()
    })
    return { up, seen }
  }

  async function openThrough(port: number): Promise<WebSocket> {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/pty`, { perMessageDeflate: false })
    ws.on('error', () => {})
    cleanups.push(() => ws.terminate())
    await once(ws, 'open')
    ws.send('ping')
    const [echo] = await once(ws, 'message')
    expect(String(echo)).toBe('ping')
    return ws
  }

  it('closes the upstream websocket when the client vanishes mid-tunnel', async () => {
    const { up, seen } = await wsUpstream()
    const s = await scene(up)
    const ws = await openThrough(s.port)
    expect(s.gw.gw.engine.tunnels.size).toBe(1)
    ws.terminate()
    await waitFor(() => seen.closed === 1, 3000, 'the upstream websocket closed')
    await s.check.finish()
  })

  it('closes the client websocket when the upstream vanishes mid-tunnel', async () => {
    const { up, seen } = await wsUpstream()
    const s = await scene(up)
    const ws = await openThrough(s.port)
    const closed = once(ws, 'close')
    for (const u of seen.sockets) u.terminate()
    await closed
    await s.check.finish()
  })

  // A browser tab closed while the upstream is still answering the handshake: the 101
  // arrives for a client that already sent its FIN. The upstream side must not stay open
  // until tunnelIdleMs (an hour by default; agents send no pings to notice).
  it('closes the upstream websocket when the client left during the handshake', async () => {
    const { up, seen } = await wsUpstream(500)
    const s = await scene(up)
    const client = await rawConversation(s.port, 'GET /pty HTTP/1.1\r\nHost: app\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
      'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n')
    await waitFor(() => seen.handshakes === 1, 3000, 'the handshake upstream')
    client.socket.destroy()
    await waitFor(() => seen.answered === 1, 3000, 'the upstream to answer')
    await waitFor(() => seen.closed === seen.opened, 3000, 'the upstream websocket closed')
    await s.check.finish()
  })
})
