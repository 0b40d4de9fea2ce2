// Message framing through the gateway (issue 2, item 5): bodies stream with backpressure both
// ways, chunked passes through byte for byte, and the special cases (HEAD, 1xx, 204, 304,
// HTTP/1.0, pipelining, keep-alive pools) keep both connections in step.

import { createHash, randomBytes } from 'node:crypto'
import { once } from 'node:events'
import http from 'node:http'
import { describe, expect, it } from 'vitest'
import type { TestGateway } from '../helpers/gateway.js'
import { finalResponse, parseResponses } from '../helpers/http-bytes.js'
import { okResponder, recordingUpstream, type RecordingUpstream, type Responder } from '../helpers/recording-upstream.js'
import { exchange, socketClosed, useTestScope, within } from '../helpers/test-scope.js'
import { httpUpstream, type TestServer } from '../helpers/upstream.js'
import { MAX_INTERIM_RESPONSES } from '../../src/upstream/upstream-connection.js'

const scope = useTestScope()

async function viaHttp(handler: http.RequestListener, config: Record<string, unknown> = {}): Promise<{ gw: TestGateway; up: TestServer<http.Server> }> {
  const up = await httpUpstream(handler)
  scope.defer(() => up.close())
  const gw = await scope.gateway(up.target, config)
  return { gw, up }
}

async function viaRaw(respond: Responder = okResponder, config: Record<string, unknown> = {}): Promise<{ gw: TestGateway; up: RecordingUpstream }> {
  const up = await recordingUpstream(respond)
  scope.defer(() => up.close())
  const gw = await scope.gateway(up.target, config)
  return { gw, up }
}

/** Bytes the gateway holds in user space on its client sockets right now. */
function gatewayClientBuffered(gw: TestGateway): number {
  let n = 0
  for (const c of gw.gw.engine.connections) n += c.socket.writableLength
  return n
}

function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex')
}

describe('streaming with backpressure', () => {
  it('streams an 8 MB response to a slow reader without holding it: backpressure reaches the upstream', async () => {
    const total = 8 * 1024 * 1024
    const payload = randomBytes(total)
    const CHUNK = 32 * 1024
    let sawFalse = false
    let maxBuffered = 0
    let onBlocked: () => void = () => {}
    const blocked = new Promise<void>((r) => { onBlocked = r })
    let gwRef: TestGateway | null = null
    const { gw } = await viaHttp(async (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(total) })
      for (let off = 0; off < total; off += CHUNK) {
        const ok = res.write(payload.subarray(off, off + CHUNK))
        if (gwRef !== null) maxBuffered = Math.max(maxBuffered, gatewayClientBuffered(gwRef))
        if (!ok) {
          sawFalse = true
          onBlocked()
          await once(res, 'drain')
        } else {
          await new Promise((r) => setImmediate(r))
        }
      }
      res.end()
    })
    gwRef = gw
    const socket = await scope.connect(gw.port())
    socket.write('GET /big HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n')
    // The client reads nothing until the upstream is held back.
    await within(blocked, 5000, 'the upstream write to report backpressure while the client does not read')
    expect(sawFalse).toBe(true)
    // Now read slowly: one chunk per event-loop turn.
    const chunks: Buffer[] = []
    socket.on('data', (d: Buffer) => {
      chunks.push(d)
      socket.pause()
      setImmediate(() => socket.resume())
    })
    await within(socketClosed(socket, 20_000), 15_000, 'the whole response')
    const raw = Buffer.concat(chunks)
    const headEnd = raw.indexOf('\r\n\r\n') + 4
    const res = finalResponse(raw.subarray(0, headEnd).toString('latin1'), true)
    expect(res.status).toBe(200)
    expect(res.get('content-length')).toBe(String(total))
    const body = raw.subarray(headEnd)
    expect(body.length).toBe(total)
    expect(sha256(body)).toBe(sha256(payload))
    expect(maxBuffered, 'bytes the gateway buffered for the client at most').toBeLessThan(1024 * 1024)
  })

  it('streams a 50 MB upload intact (Content-Length)', async () => {
    const { gw } = await viaHttp(async (req, res) => {
      const h = createHash('sha256')
      let n = 0
      for await (const c of req) { h.update(c as Buffer); n += (c as Buffer).length }
      res.end(JSON.stringify({ n, hash: h.digest('hex') }))
    }, { limits: { maxBodyBytes: 64 * 1024 * 1024 } })
    const result = await upload(gw.port(), 50, true)
    expect(result.status).toBe(200)
    expect(result.body).toEqual({ n: result.sent, hash: result.hash })
  })

  it('streams a 16 MB chunked upload intact', async () => {
    const { gw } = await viaHttp(async (req, res) => {
      const h = createHash('sha256')
      let n = 0
      for await (const c of req) { h.update(c as Buffer); n += (c as Buffer).length }
      res.end(JSON.stringify({ n, hash: h.digest('hex'), te: req.headers['transfer-encoding'] ?? null }))
    }, { limits: { maxBodyBytes: 64 * 1024 * 1024 } })
    const result = await upload(gw.port(), 16, false)
    expect(result.status).toBe(200)
    expect(result.body).toEqual({ n: result.sent, hash: result.hash, te: 'chunked' })
  })
})

/** Uploads `mb` MiB of generated bytes with backpressure; returns what the upstream reported. */
async function upload(port: number, mb: number, withLength: boolean): Promise<{ status: number; body: unknown; sent: number; hash: string }> {
  const block = randomBytes(1024 * 1024)
  const total = mb * block.length
  const h = createHash('sha256')
  const req = http.request({
    host: '127.0.0.1', port, method: 'POST', path: '/upload', agent: false,
    headers: withLength ? { 'content-length': String(total) } : { 'transfer-encoding': 'chunked' },
  })
  const response = once(req, 'response') as Promise<[http.IncomingMessage]>
  req.on('error', () => {})
  for (let i = 0; i < mb; i++) {
    // Each block differs (its index in the first bytes), so a reordered or repeated block shows.
    block.writeUInt32BE(i, 0)
    const copy = Buffer.from(block)
    h.update(copy)
    if (!req.write(copy)) await once(req, 'drain')
  }
  req.end()
  const [res] = await within(response, 15_000, 'the upload response')
  let text = ''
  for await (const c of res) text += String(c)
  return { status: res.statusCode ?? 0, body: JSON.parse(text), sent: total, hash: h.digest('hex') }
}

describe('chunked bodies pass through byte for byte', () => {
  it('forwards a chunked request with extensions and trailers exactly as sent', async () => {
    const { gw, up } = await viaRaw()
    const body = '5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t1\r\nX-Other: t2\r\n\r\n'
    const client = scope.client(gw.port())
    client.socket.write(`POST /chunked HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n${body.slice(0, 17)}`)
    await within(up.nextHead(), 2000, 'the head upstream')
    client.socket.write(body.slice(17))
    await client.waitFor('/chunked')
    expect(up.requests).toHaveLength(1)
    expect(up.requests[0].all('transfer-encoding')).toEqual(['chunked'])
    expect(up.requests[0].get('content-length')).toBeUndefined()
    expect(up.requests[0].body.toString('latin1')).toBe(body)
  })

  it('relays a chunked response with extensions and trailers exactly as the upstream sent it', async () => {
    const first = '3;ext=1\r\nabc\r\n'
    const rest = '4\r\ndefg\r\n0\r\nX-Sum: 7\r\nX-More: yes\r\n\r\n'
    const { gw } = await viaRaw((_req, socket) => {
      socket.write(`HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n${first}`)
      setTimeout(() => socket.write(rest), 20)
    })
    const client = scope.client(gw.port())
    client.socket.write('GET /r HTTP/1.1\r\nHost: h\r\n\r\n')
    const raw = await client.waitFor('X-More: yes\r\n\r\n')
    const res = finalResponse(raw)
    expect(res.get('transfer-encoding')).toBe('chunked')
    expect(res.rawBody).toBe(first + rest)
    expect(res.body).toBe('abcdefg')
  })
})

describe('responses without a body', () => {
  it('relays a HEAD response with Content-Length but no body, and the next response on the connection still parses', async () => {
    const { gw, up } = await viaRaw((req, socket) => {
      if (req.method === 'HEAD') socket.write('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1234\r\n\r\n')
      else okResponder(req, socket)
    })
    const client = scope.client(gw.port())
    client.socket.write('HEAD /doc HTTP/1.1\r\nHost: h\r\n\r\n')
    await client.waitFor('\r\n\r\n')
    client.socket.write('GET /after HTTP/1.1\r\nHost: h\r\n\r\n')
    const raw = await client.waitFor('/after')
    const [head, after] = parseResponses(raw, (i) => i === 0)
    expect(head.status).toBe(200)
    expect(head.get('content-length')).toBe('1234')
    expect(head.rawBody).toBe('')
    expect(after.status).toBe(200)
    expect(after.body).toBe('/after')
    expect(raw.endsWith('/after')).toBe(true)
    expect(up.connections).toHaveLength(1)
  })

  it('relays a HEAD response that announces chunked without waiting for chunks', async () => {
    const { gw } = await viaRaw((req, socket) => {
      if (req.method === 'HEAD') socket.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n')
      else okResponder(req, socket)
    })
    const client = scope.client(gw.port())
    client.socket.write('HEAD /doc HTTP/1.1\r\nHost: h\r\n\r\nGET /after HTTP/1.1\r\nHost: h\r\n\r\n')
    const raw = await client.waitFor('/after', 2000)
    const [head, after] = parseResponses(raw, (i) => i === 0)
    expect(head.status).toBe(200)
    expect(after.body).toBe('/after')
  })

  it('relays 204 and 304 without a body and keeps both connections usable', async () => {
    const { gw, up } = await viaRaw((req, socket) => {
      if (req.target === '/204') socket.write('HTTP/1.1 204 No Content\r\nX-A: b\r\n\r\n')
      else if (req.target === '/304') socket.write('HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\nContent-Length: 10\r\n\r\n')
      else okResponder(req, socket)
    })
    const client = scope.client(gw.port())
    client.socket.write('GET /204 HTTP/1.1\r\nHost: h\r\n\r\n')
    await client.waitFor('204')
    client.socket.write('GET /304 HTTP/1.1\r\nHost: h\r\nIf-None-Match: "v1"\r\n\r\n')
    await client.waitFor('304')
    client.socket.write('GET /after HTTP/1.1\r\nHost: h\r\n\r\n')
    const raw = await client.waitFor('/after')
    const rs = parseResponses(raw)
    expect(rs.map((r) => r.status)).toEqual([204, 304, 200])
    expect(rs[0].rawBody).toBe('')
    expect(rs[0].get('content-length')).toBeUndefined()
    expect(rs[0].get('transfer-encoding')).toBeUndefined()
    expect(rs[1].get('content-length')).toBe('10')
    expect(rs[1].rawBody).toBe('')
    expect(rs[2].body).toBe('/after')
    expect(up.connections).toHaveLength(1)
  })
})

describe('interim responses', () => {
  it('passes 100 Continue to a client that sent Expect: 100-continue, then the final response', async () => {
    const { gw } = await viaHttp(async (req, res) => {
      let body = ''
      for await (const c of req) body += String(c)
      res.end(`got ${body}`)
    })
    const client = scope.client(gw.port())
    client.socket.write('POST /upload HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n')
    const interim = await client.waitFor('\r\n\r\n', 2000)
    expect(interim).toMatch(/^HTTP\/1\.1 100 /)
    client.socket.write('hello')
    const raw = await client.waitFor('got hello')
    const rs = parseResponses(raw)
    expect(rs.map((r) => r.status)).toEqual([100, 200])
    expect(rs[1].body).toBe('got hello')
  })

  it('passes 103 Early Hints to an HTTP/1.1 client before the final response', async () => {
    const { gw } = await viaHttp((_req, res) => {
      res.writeEarlyHints({ link: '</style.css>; rel=preload; as=style' })
      setImmediate(() => res.end('done'))
    })
    const client = scope.client(gw.port())
    client.socket.write('GET /page HTTP/1.1\r\nHost: h\r\n\r\n')
    const raw = await client.waitFor('done')
    const rs = parseResponses(raw)
    expect(rs.map((r) => r.status)).toEqual([103, 200])
    expect(rs[0].get('link')).toBe('</style.css>; rel=preload; as=style')
    expect(rs[1].body).toBe('done')
  })

  it(`relays up to ${MAX_INTERIM_RESPONSES} interim responses, and answers 502 to an upstream that sends more`, async () => {
    const interims = (n: number): string => 'HTTP/1.1 100 Continue\r\n\r\n'.repeat(n)
    const final = 'HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone'
    const { gw } = await viaRaw((req, socket) => {
      socket.write(req.target === '/many' ? interims(MAX_INTERIM_RESPONSES + 1) + final : interims(MAX_INTERIM_RESPONSES) + final)
    })
    const ok = parseResponses((await exchange(gw.port(), 'GET /enough HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n')).raw)
    expect(ok.map((r) => r.status)).toEqual([...Array<number>(MAX_INTERIM_RESPONSES).fill(100), 200])
    expect(ok[MAX_INTERIM_RESPONSES].body).toBe('done')
    const refused = parseResponses((await exchange(gw.port(), 'GET /many HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n')).raw)
    expect(refused.map((r) => r.status)).toEqual([...Array<number>(MAX_INTERIM_RESPONSES).fill(100), 502])
    expect(refused[MAX_INTERIM_RESPONSES].get('x-gateway-error')).toBe('upstream_bad_response')
  })

  it('never sends a 1xx to an HTTP/1.0 client', async () => {
    const { gw } = await viaRaw((_req, socket) => {
      socket.write('HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n')
      socket.end('HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\ndone')
    })
    const ex = await exchange(gw.port(), 'GET / HTTP/1.0\r\n\r\n')
    const rs = parseResponses(ex.raw)
    expect(rs.map((r) => r.status)).toEqual([200])
    expect(rs[0].body).toBe('done')
  })
})

describe('answers that come before the request body', () => {
  it('relays an upstream final answer to Expect: 100-continue sent before any body, then closes', async () => {
    // The upstream answers as soon as it has the head, without waiting for the body.
    const { gw, up } = await viaRaw(() => {})
    up.events.on('head', (req) => req.conn.socket.write('HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\n\r\ntoo big!'))
    const client = scope.client(gw.port())
    client.socket.write('POST /upload HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1000\r\n\r\n')
    await within(socketClosed(client.socket), 2000, 'the client connection to close after the early answer')
    const rs = parseResponses(client.received())
    expect(rs.map((r) => r.status)).toEqual([413])
    expect(rs[0].body).toBe('too big!')
    expect(rs[0].get('x-gateway-error')).toBeUndefined()
    await within(up.connections[0].closedPromise, 1000, 'the upstream connection with an unfinished request body to close')
  })

  it('never lets the rest of a body answered early become a request of its own (smuggling)', async () => {
    const { gw, up } = await viaRaw()
    up.events.on('head', (req) => {
      if (req.target === '/upload') req.conn.socket.write('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nearly')
    })
    const smuggled = 'GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n'
    const client = scope.client(gw.port())
    client.socket.write(`POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: ${10 + smuggled.length}\r\n\r\n0123456789`)
    await client.waitFor('early')
    client.socket.write(smuggled)
    await within(socketClosed(client.socket), 2000, 'the client connection to close')
    expect(parseResponses(client.received()).map((r) => r.status)).toEqual([200])
    expect(up.requests.map((r) => r.target)).toEqual(['/upload'])
    for (const c of up.connections) await within(c.closedPromise, 1000, 'the upstream connection with an unfinished body to close')
  })
})

describe('HTTP/1.0 clients, pipelining and connection reuse', () => {
  it('answers a request whose client half-closed right after sending it', async () => {
    const { gw } = await viaRaw()
    const socket = await scope.connect(gw.port())
    const chunks: Buffer[] = []
    socket.on('data', (d: Buffer) => chunks.push(d))
    socket.end('GET /half HTTP/1.1\r\nHost: h\r\n\r\n')
    await within(socketClosed(socket), 2000, 'the gateway to answer and close')
    const res = finalResponse(Buffer.concat(chunks).toString('latin1'))
    expect(res.status).toBe(200)
    expect(res.body).toBe('/half')
  })

  it('answers 100 pipelined requests sent in one write, in order', async () => {
    const { gw, up } = await viaRaw()
    let bytes = ''
    for (let i = 0; i < 100; i++) bytes += `GET /p${i}?${'q'.repeat(1000)} HTTP/1.1\r\nHost: h\r\n${i === 99 ? 'Connection: close\r\n' : ''}\r\n`
    const ex = await exchange(gw.port(), bytes, 5000)
    expect(ex.closed).toBe(true)
    const bodies = parseResponses(ex.raw).map((r) => r.body.split('?')[0])
    expect(bodies).toEqual(Array.from({ length: 100 }, (_, i) => `/p${i}`))
    expect(up.connections).toHaveLength(1)
  })

  it('gives an HTTP/1.0 client a response without chunked framing, then closes', async () => {
    const { gw } = await viaHttp((_req, res) => {
      res.write('a')
      setImmediate(() => { res.write('b'); res.end('c') })
    })
    const ex = await exchange(gw.port(), 'GET /old HTTP/1.0\r\nHost: h\r\n\r\n')
    expect(ex.closed).toBe(true)
    const res = finalResponse(ex.raw)
    expect(res.status).toBe(200)
    expect(res.get('transfer-encoding')).toBeUndefined()
    expect(res.body).toBe('abc')
  })

  it('never passes chunked framing to an HTTP/1.0 client, even from an upstream that sends it anyway', async () => {
    const { gw } = await viaRaw((_req, socket) => {
      socket.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n')
    })
    const ex = await exchange(gw.port(), 'GET /old HTTP/1.0\r\nHost: h\r\n\r\n')
    expect(ex.closed).toBe(true)
    const res = finalResponse(ex.raw)
    expect(res.get('transfer-encoding')).toBeUndefined()
    if (res.status === 200) expect(res.body).toBe('hello')
    else expect({ status: res.status, code: res.get('x-gateway-error') }).toEqual({ status: 502, code: 'upstream_bad_response' })
  })

  it('closes the client connection after a response delimited by the upstream closing', async () => {
    const { gw, up } = await viaRaw((_req, socket) => {
      socket.end('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close')
    })
    const client = scope.client(gw.port())
    client.socket.write('GET /a HTTP/1.1\r\nHost: h\r\n\r\n')
    const end = await within(socketClosed(client.socket), 2000, 'the client connection to close')
    expect(end.error).toBeNull()
    const res = finalResponse(client.received())
    expect(res.status).toBe(200)
    expect(res.body).toBe('until close')
    expect(up.connections).toHaveLength(1)
  })

  it('answers pipelined requests in order, each framed right', async () => {
    const delays: Record<string, number> = { '/1': 60, '/2': 30, '/3': 0 }
    const { gw, up } = await viaRaw((req, socket) => {
      setTimeout(() => okResponder(req, socket), delays[req.target] ?? 0)
    })
    const ex = await exchange(gw.port(),
      'GET /1 HTTP/1.1\r\nHost: h\r\n\r\n' +
      'POST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello' +
      'GET /3 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n')
    expect(ex.closed).toBe(true)
    const rs = parseResponses(ex.raw)
    expect(rs.map((r) => [r.status, r.body])).toEqual([[200, '/1'], [200, '/2'], [200, '/3']])
    expect(up.requests.map((r) => [r.method, r.target, r.body.toString()])).toEqual([['GET', '/1', ''], ['POST', '/2', 'hello'], ['GET', '/3', '']])
  })

  it('reuses one pooled upstream connection for 10 sequential requests from different clients', async () => {
    const { gw, up } = await viaHttp((req, res) => res.end(req.url))
    for (let i = 0; i < 10; i++) {
      const ex = await exchange(gw.port(), `GET /r${i} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n`)
      expect(finalResponse(ex.raw).body).toBe(`/r${i}`)
    }
    expect(up.connections).toBe(1)
  })

  it('reuses one pooled upstream connection for 10 sequential requests on one keep-alive client connection', async () => {
    const { gw, up } = await viaHttp((req, res) => res.end(req.url))
    const client = scope.client(gw.port())
    for (let i = 0; i < 10; i++) {
      client.socket.write(`GET /k${i} HTTP/1.1\r\nHost: h\r\n\r\n`)
      await client.waitFor(`/k${i}`)
    }
    expect(parseResponses(client.received()).map((r) => r.body)).toEqual(Array.from({ length: 10 }, (_, i) => `/k${i}`))
    expect(up.connections).toBe(1)
  })
})
