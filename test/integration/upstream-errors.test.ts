// Upstreams that misbehave (issue 2, items 7 and 8): malformed responses are answered 502
// upstream_bad_response and that connection is never reused; refused, reset and silent
// upstreams get 502 upstream_unreachable / upstream_reset / 504 upstream_timeout; a response
// cut short after its head reaches the client as an aborted connection; a stale pooled
// connection is retried once, for safe methods only.

import net from 'node:net'
import { once } from 'node:events'
import { describe, expect, it } from 'vitest'
import type { TestGateway } from '../helpers/gateway.js'
import { finalResponse, parseResponses } from '../helpers/http-bytes.js'
import { okResponder, recordingUpstream, type RecordingUpstream, type Responder } from '../helpers/recording-upstream.js'
import { exchange, socketClosed, useTestScope, within } from '../helpers/test-scope.js'

const scope = useTestScope()

// The gateway's deadlines run on a coarse clock (src/timers.ts, 250 ms sweeps), so a deadline
// may fire up to one sweep early; the lower bound only rules out a wrong (much shorter) timeout.
const COARSE_MS = 260

async function setup(respond: Responder, config: Record<string, unknown> = {}): Promise<{ gw: TestGateway; port: number; up: RecordingUpstream }> {
  const up = await recordingUpstream(respond)
  scope.defer(() => up.close())
  const gw = await scope.gateway(up.target, config)
  return { gw, port: gw.port(), up }
}

function expectError(raw: string, status: number, code: string): void {
  const res = finalResponse(raw)
  expect({ status: res.status, code: res.get('x-gateway-error') }).toEqual({ status, code })
}

const GET = (path: string): string => `GET ${path} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n`

const BAD_RESPONSES: [string, string][] = [
  ['a status line that is not HTTP', 'HTTX/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok'],
  ['a non-numeric status code', 'HTTP/1.1 2OO OK\r\nContent-Length: 2\r\n\r\nok'],
  ['a two-digit status code', 'HTTP/1.1 20 OK\r\nContent-Length: 2\r\n\r\nok'],
  ['an HTTP/2 status line', 'HTTP/2 200 OK\r\nContent-Length: 2\r\n\r\nok'],
  ['Content-Length together with Transfer-Encoding', 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n'],
  ['two different Content-Length headers', 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!'],
  ['an invalid Content-Length', 'HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\nok'],
  ['chunked applied twice', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n'],
  ['a 204 with a Content-Length body', 'HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello'],
  ['a 204 with a chunked body', 'HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n'],
  ['an unsolicited 101', 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n'],
  ['an obs-fold header line', 'HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok'],
  ['a bare LF inside the head', 'HTTP/1.1 200 OK\r\nX-A: b\nContent-Length: 2\r\n\r\nok'],
  ['a bare CR inside the head', 'HTTP/1.1 200 OK\r\nX-A: b\rContent-Length: 2\r\n\r\nok'],
  ['a NUL in a header value', 'HTTP/1.1 200 OK\r\nX-A: a\0b\r\nContent-Length: 2\r\n\r\nok'],
  ['whitespace before a colon', 'HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok'],
  ['a response head over 64 KiB', `HTTP/1.1 200 OK\r\nX-Big: ${'a'.repeat(70 * 1024)}\r\nContent-Length: 2\r\n\r\nok`],
  ['an unterminated response head over 64 KiB', `HTTP/1.1 200 OK\r\nX-Big: ${'a'.repeat(70 * 1024)}`],
]

describe('malformed upstream responses', () => {
  it.each(BAD_RESPONSES)('answers 502 upstream_bad_response to %s and discards that upstream connection', async (_name, bytes) => {
    const { port, up } = await setup((req, socket) => {
      if (req.conn.id === 0) socket.write(bytes)
      else okResponder(req, socket)
    }, { timeouts: { responseMs: 3000 } })
    const ex = await exchange(port, GET('/bad'), 4000)
    expectError(ex.raw, 502, 'upstream_bad_response')
    expect(ex.elapsedMs).toBeLessThan(1000)
    await within(up.connections[0].closedPromise, 1000, 'the gateway to close the misbehaving upstream connection')
    const next = await exchange(port, GET('/next'))
    expect(finalResponse(next.raw).body).toBe('/next')
    expect(up.requests[up.requests.length - 1].conn.id).toBe(1)
  })

  it('answers 502 upstream_bad_response promptly to a head with bare LF line endings only', async () => {
    const { port, up } = await setup((req, socket) => {
      socket.write('HTTP/1.1 200 OK\nContent-Type: text/plain\nContent-Length: 2\n\nok')
    }, { timeouts: { responseMs: 2000 } })
    const ex = await exchange(port, GET('/bad'), 2500)
    expectError(ex.raw, 502, 'upstream_bad_response')
    expect(ex.elapsedMs).toBeLessThan(1000)
    await within(up.connections[0].closedPromise, 1000, 'the misbehaving upstream connection to close')
  })

  it('relays a response followed by stray bytes, then never reuses that connection', async () => {
    const { port, up } = await setup((req, socket) => {
      if (req.conn.id === 0) socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA-GARBAGE')
      else okResponder(req, socket)
    })
    const first = await exchange(port, GET('/first'))
    const res = finalResponse(first.raw)
    expect(res.status).toBe(200)
    expect(res.body).toBe('ok')
    expect(first.raw.endsWith('ok')).toBe(true)
    await within(up.connections[0].closedPromise, 1000, 'the upstream connection with stray bytes to close')
    const next = await exchange(port, GET('/next'))
    expect(finalResponse(next.raw).body).toBe('/next')
    expect(up.requests[up.requests.length - 1].conn.id).toBe(1)
  })

  it('discards the connection of a 204 that is followed by stray bytes', async () => {
    const { port, up } = await setup((req, socket) => {
      if (req.conn.id === 0) {
        socket.write('HTTP/1.1 204 No Content\r\n\r\n')
        setTimeout(() => socket.write('hello'), 30)
      } else okResponder(req, socket)
    })
    const first = await exchange(port, GET('/first'))
    expect(finalResponse(first.raw).status).toBe(204)
    await within(up.connections[0].closedPromise, 1000, 'the upstream connection that talked out of turn to close')
    const next = await exchange(port, GET('/next'))
    expect(finalResponse(next.raw).body).toBe('/next')
    expect(up.requests[up.requests.length - 1].conn.id).toBe(1)
  })
})

describe('responses cut short after their head', () => {
  const CUTS: [string, string, (s: net.Socket) => void][] = [
    ['a Content-Length body cut by a reset', 'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789', (s) => s.resetAndDestroy()],
    ['a Content-Length body cut by a close', 'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789', (s) => s.end()],
    ['a chunked body cut by a close', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n', (s) => s.end()],
    ['a chunked body that turns malformed', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n', (s) => s.write('zz\r\n')],
  ]

  it.each(CUTS)('aborts the client connection on %s (never a clean, complete-looking response)', async (_name, bytes, cut) => {
    const { port } = await setup((_req, socket) => {
      socket.write(bytes)
      setTimeout(() => cut(socket), 30)
    })
    const client = scope.client(port)
    client.socket.write('GET /cut HTTP/1.1\r\nHost: h\r\n\r\n')
    await client.waitFor('0123456789')
    const end = await within(socketClosed(client.socket), 2000, 'the client connection to end')
    const raw = client.received()
    const rs = parseResponses(raw)
    expect(rs).toHaveLength(1)
    expect(rs[0].status).toBe(200)
    expect(rs[0].complete, 'the framing never claims the body is complete').toBe(false)
    expect(end.error, 'the client sees a reset, not an orderly close').toBe('ECONNRESET')
  })
})

describe('unreachable, resetting and silent upstreams', () => {
  it('answers 502 upstream_unreachable when the upstream port refuses connections', async () => {
    const probe = net.createServer()
    probe.listen(0, '127.0.0.1')
    await once(probe, 'listening')
    const port0 = (probe.address() as net.AddressInfo).port
    await new Promise((r) => probe.close(r))
    const gw = await scope.gateway(`127.0.0.1:${port0}`)
    const ex = await exchange(gw.port(), GET('/'))
    expectError(ex.raw, 502, 'upstream_unreachable')
    expect(ex.elapsedMs).toBeLessThan(1000)
  })

  it('answers 502 upstream_reset when the upstream resets the connection before a response head', async () => {
    const { port } = await setup((_req, socket) => socket.resetAndDestroy())
    const ex = await exchange(port, GET('/'))
    expectError(ex.raw, 502, 'upstream_reset')
  })

  it('answers 502 upstream_reset when the upstream closes the connection before a response head', async () => {
    const { port } = await setup((_req, socket) => socket.end())
    const ex = await exchange(port, GET('/'))
    expectError(ex.raw, 502, 'upstream_reset')
  })

  it('answers 502 upstream_reset when the upstream closes in the middle of a response head', async () => {
    const { port } = await setup((_req, socket) => socket.end('HTTP/1.1 200 OK\r\nContent-Len'))
    const ex = await exchange(port, GET('/'))
    expectError(ex.raw, 502, 'upstream_reset')
  })

  it('answers 502 upstream_reset when the upstream resets while the request body is still uploading', async () => {
    const { port, up } = await setup(() => {})
    up.events.on('head', (req) => req.conn.socket.resetAndDestroy())
    const client = scope.client(port)
    client.socket.write('POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 1000000\r\n\r\n')
    client.socket.write(Buffer.alloc(10_000, 0x61))
    const raw = await client.waitFor(/\r\n\r\n/, 3000)
    expectError(raw, 502, 'upstream_reset')
    await within(socketClosed(client.socket), 2000, 'the client connection to close')
  })

  it('answers 504 upstream_timeout within a second of timeouts.responseMs when the upstream never answers', async () => {
    const responseMs = 300
    const { port, up } = await setup(() => {}, { timeouts: { responseMs } })
    const ex = await exchange(port, GET('/'), 3000)
    expectError(ex.raw, 504, 'upstream_timeout')
    expect(ex.elapsedMs).toBeGreaterThanOrEqual(responseMs - COARSE_MS)
    expect(ex.elapsedMs).toBeLessThan(responseMs + 1000)
    await within(up.connections[0].closedPromise, 1000, 'the silent upstream connection to close')
  })

  it('answers 504 upstream_timeout when the upstream stops reading an upload for timeouts.responseMs', async () => {
    const responseMs = 300
    const size = 48 * 1024 * 1024 // more than every socket buffer on the way can hold
    const { port, up } = await setup(() => {}, { timeouts: { responseMs }, limits: { maxBodyBytes: size } })
    up.events.on('head', (req) => req.conn.socket.pause())
    const client = scope.client(port)
    client.socket.write(`POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: ${size}\r\n\r\n`)
    client.socket.write(Buffer.alloc(size, 0x61))
    const raw = await client.waitFor(/\r\n\r\n/, 10_000)
    expectError(raw, 504, 'upstream_timeout')
    up.connections[0].socket.resume() // a paused socket learns of the gateway's reset only by reading
    await within(up.connections[0].closedPromise, 1000, 'the upstream connection to close')
  })

  it('answers 504 upstream_timeout when the upstream stops in the middle of a response head', async () => {
    const responseMs = 300
    const { port } = await setup((_req, socket) => socket.write('HTTP/1.1 200 OK\r\nContent-Le'), { timeouts: { responseMs } })
    const ex = await exchange(port, GET('/'), 3000)
    expectError(ex.raw, 504, 'upstream_timeout')
    expect(ex.elapsedMs).toBeLessThan(responseMs + 1000)
  })
})

describe('a pooled connection that died while idle', () => {
  it('still answers the next GET when the upstream closes idle sockets right after responding', async () => {
    const { port, up } = await setup((req, socket) => {
      okResponder(req, socket)
      socket.end()
    })
    for (const path of ['/1', '/2', '/3']) {
      const ex = await exchange(port, GET(path))
      expect(finalResponse(ex.raw).body).toBe(path)
    }
    expect(up.connections.length).toBe(3)
  })

  // The upstream's close crosses the gateway's next request on the wire: the request lands on
  // a connection that then closes without a byte of response.
  const closes: [string, (s: net.Socket) => void][] = [['a close', (s) => s.destroy()], ['a reset', (s) => s.resetAndDestroy()]]

  /** A client whose connection has had one exchange (GET /1), so the next request reuses a pooled upstream connection. */
  async function afterOneExchange(port: number): Promise<ReturnType<typeof scope.client>> {
    const client = scope.client(port)
    client.socket.write('GET /1 HTTP/1.1\r\nHost: h\r\n\r\n')
    await client.waitFor('/1')
    return client
  }

  it.each(closes)('retries a GET once on a fresh connection when a reused one dies with %s before answering', async (_name, kill) => {
    const { port, up } = await setup((req, socket) => {
      if (req.index === 0) okResponder(req, socket)
      else kill(socket)
    })
    const client = await afterOneExchange(port)
    client.socket.write('GET /2 HTTP/1.1\r\nHost: h\r\n\r\n')
    const raw = await client.waitFor(/\/1[\s\S]*\/2$/)
    expect(parseResponses(raw).map((r) => [r.status, r.body])).toEqual([[200, '/1'], [200, '/2']])
    expect(up.requests.map((r) => [r.target, r.conn.id])).toEqual([['/1', 0], ['/2', 0], ['/2', 1]])
  })

  it.each(closes)('retries a HEAD once on a fresh connection when a reused one dies with %s before answering', async (_name, kill) => {
    // Connection 0 answers /1, then dies on the HEAD; connection 1 answers the HEAD.
    const { port, up } = await setup((req, socket) => {
      if (req.conn.id === 0 && req.index === 0) okResponder(req, socket)
      else if (req.conn.id === 0) kill(socket)
      else socket.write('HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n')
    })
    const client = await afterOneExchange(port)
    client.socket.write('HEAD /2 HTTP/1.1\r\nHost: h\r\n\r\n')
    const raw = await client.waitFor(/\/1HTTP\/1\.1 200[\s\S]*\r\n\r\n$/)
    expect(parseResponses(raw, (i) => i === 1).map((r) => r.status)).toEqual([200, 200])
    expect(up.requests.map((r) => [r.method, r.conn.id])).toEqual([['GET', 0], ['HEAD', 0], ['HEAD', 1]])
  })

  it.each(closes)('does not retry a POST when a reused connection dies with %s before answering: 502 upstream_reset', async (_name, kill) => {
    const { port, up } = await setup((req, socket) => {
      if (req.index === 0) okResponder(req, socket)
      else kill(socket)
    })
    const client = await afterOneExchange(port)
    client.socket.write('POST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello')
    const raw = await client.waitFor(/\/1HTTP[\s\S]*\r\n\r\n/)
    const rs = parseResponses(raw)
    expect(rs[1].status).toBe(502)
    expect(rs[1].get('x-gateway-error')).toBe('upstream_reset')
    expect(up.requests.filter((r) => r.method === 'POST')).toHaveLength(1)
    expect(up.connections).toHaveLength(1)
  })
})
