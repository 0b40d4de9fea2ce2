// Request strictness (issue 2, item 7): every ambiguous or malformed request is answered
// 400 bad_request (or 408/413/431) and the upstream receives nothing at all, so a second
// parser further down never gets a chance to read the bytes differently (request smuggling).

import { once } from 'node:events'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import tls from 'node:tls'
import { describe, expect, it } from 'vitest'
import { createCertificates } from '../../src/listeners/certificate-authority.js'
import { finalResponse } from '../helpers/http-bytes.js'
import { recordingUpstream, type RecordingUpstream, type Responder } from '../helpers/recording-upstream.js'
import { exchange, socketClosed, useTestScope, within } from '../helpers/test-scope.js'

const scope = useTestScope()

/** A gateway with one HTTPS listener (a certificate for localhost) in front of a recording upstream. */
async function httpsGateway(config: Record<string, unknown>, respond?: Responder): Promise<{ up: RecordingUpstream; port: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'gw-strict-tls-'))
  scope.defer(() => rmSync(dir, { recursive: true, force: true }))
  const files = await createCertificates({ outDir: dir, hosts: ['localhost', '127.0.0.1'] })
  const up = await recordingUpstream(respond)
  scope.defer(() => up.close())
  const gw = await scope.gateway(up.target, {
    ...config,
    listeners: [{ name: 'https', port: 0, host: '127.0.0.1', tls: { cert: files.cert, key: files.key } }],
  })
  return { up, port: gw.port('https') }
}

// The gateway's deadlines run on a coarse clock (src/timers.ts, 250 ms sweeps), so a deadline
// may fire up to one sweep early; the lower bound only rules out a wrong (much shorter) timeout.
const COARSE_MS = 260

async function setup(config: Record<string, unknown> = {}): Promise<{ port: number; up: RecordingUpstream }> {
  const up = await recordingUpstream()
  scope.defer(() => up.close())
  const gw = await scope.gateway(up.target, config)
  return { port: gw.port(), up }
}

/** Status and x-gateway-error of the gateway's answer, and that it closed the connection. */
function expectRefusal(ex: { raw: string; closed: boolean }, status: number, code: string): void {
  const res = finalResponse(ex.raw)
  expect({ status: res.status, code: res.get('x-gateway-error') }).toEqual({ status, code })
  expect(ex.closed, 'the gateway closes the connection after refusing').toBe(true)
}

/**
 * The upstream saw nothing of the refused request: no connection, no byte. A sentinel request
 * sent afterwards on a fresh connection proves the gateway still works and orders the check
 * after anything the refused request could have caused.
 */
async function expectNothingForwarded(port: number, up: RecordingUpstream): Promise<void> {
  expect(up.connections.length, 'upstream connections before the sentinel').toBe(0)
  const sentinel = await exchange(port, 'GET /__sentinel HTTP/1.1\r\nHost: sentinel\r\nConnection: close\r\n\r\n')
  expect(finalResponse(sentinel.raw).status).toBe(200)
  expect(up.requests.map((r) => r.target)).toEqual(['/__sentinel'])
  expect(up.connections.length).toBe(1)
  expect(up.bytesReceived()).toBe(Buffer.byteLength(up.requests[0].head) + 4)
}

const WS_HEAD = 'Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n'

const BAD_REQUESTS: [string, string][] = [
  ['Content-Length together with Transfer-Encoding', 'POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n'],
  ['Transfer-Encoding before Content-Length', 'POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n'],
  ['two equal Content-Length headers', 'POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello'],
  ['two different Content-Length headers', 'POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!'],
  ['a Content-Length list', 'POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\nhello'],
  ['a Content-Length with a plus sign', 'POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\nhello'],
  ['a negative Content-Length', 'POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n'],
  ['a Content-Length with a space inside', 'POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1 0\r\n\r\nhelloworld'],
  ['a hexadecimal Content-Length', 'POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x5\r\n\r\nhello'],
  ['a Content-Length with trailing junk', 'POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5a\r\n\r\nhello'],
  ['Transfer-Encoding ",chunked"', 'POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: ,chunked\r\n\r\n0\r\n\r\n'],
  ['Transfer-Encoding "chunked, identity"', 'POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n'],
  ['Transfer-Encoding "gzip, chunked"', 'POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n'],
  ['Transfer-Encoding "identity"', 'POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity\r\n\r\nhello'],
  ['Transfer-Encoding "chunked" on two lines', 'POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n'],
  ['Transfer-Encoding "xchunked"', 'POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n'],
  ['Transfer-Encoding in an HTTP/1.0 request', 'POST / HTTP/1.0\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n'],
  ['an obs-fold continuation line', 'GET / HTTP/1.1\r\nHost: h\r\nX-Folded: a\r\n b\r\n\r\n'],
  ['an obs-fold with a tab', 'GET / HTTP/1.1\r\nHost: h\r\nX-Folded: a\r\n\tb\r\n\r\n'],
  ['a bare CR inside the head', 'GET / HTTP/1.1\r\nHost: h\rX-A: b\r\n\r\n'],
  ['a bare LF inside an otherwise CRLF head', 'GET / HTTP/1.1\r\nHost: h\nX-A: b\r\n\r\n'],
  ['two Host headers', 'GET / HTTP/1.1\r\nHost: a.example.com\r\nHost: b.example.com\r\n\r\n'],
  ['two identical Host headers', 'GET / HTTP/1.1\r\nHost: a.example.com\r\nHost: a.example.com\r\n\r\n'],
  ['no Host on HTTP/1.1', 'GET / HTTP/1.1\r\nX-A: b\r\n\r\n'],
  ['an absolute-form target whose authority differs from Host', 'GET http://evil.example.com/ HTTP/1.1\r\nHost: good.example.com\r\n\r\n'],
  ['an absolute-form target with userinfo', 'GET http://user@good.example.com/ HTTP/1.1\r\nHost: good.example.com\r\n\r\n'],
  ['"*" as the target of a GET', 'GET * HTTP/1.1\r\nHost: h\r\n\r\n'],
  ['HTTP/0.9 terminated by an empty line', 'GET /\r\n\r\n'],
  ['HTTP/2.0 as the version', 'GET / HTTP/2.0\r\nHost: h\r\n\r\n'],
  ['HTTP/1.2 as the version', 'GET / HTTP/1.2\r\nHost: h\r\n\r\n'],
  ['a lower-case version', 'GET / http/1.1\r\nHost: h\r\n\r\n'],
  ['a PRI (HTTP/2 preface) request', 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'],
  ['a websocket upgrade with a Content-Length body', `GET /ws HTTP/1.1\r\nHost: h\r\n${WS_HEAD}Content-Length: 5\r\n\r\nhello`],
  ['a websocket upgrade with a chunked body', `GET /ws HTTP/1.1\r\nHost: h\r\n${WS_HEAD}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n`],
  ['a header name with an underscore', 'GET / HTTP/1.1\r\nHost: h\r\nX_Forwarded_For: 10.0.0.1\r\n\r\n'],
  ['whitespace between a header name and the colon', 'GET / HTTP/1.1\r\nHost: h\r\nContent-Length : 0\r\n\r\n'],
  ['a space inside a header name', 'GET / HTTP/1.1\r\nHost: h\r\nX Bad: v\r\n\r\n'],
  ['a header line without a colon', 'GET / HTTP/1.1\r\nHost: h\r\nNoColonHere\r\n\r\n'],
  ['a NUL in a header value', 'GET / HTTP/1.1\r\nHost: h\r\nX-A: a\0b\r\n\r\n'],
  ['a control character in a header value', 'GET / HTTP/1.1\r\nHost: h\r\nX-A: a\x01b\r\n\r\n'],
  ['a DEL in a header value', 'GET / HTTP/1.1\r\nHost: h\r\nX-A: a\x7fb\r\n\r\n'],
  ['a space inside the request target', 'GET /a b HTTP/1.1\r\nHost: h\r\n\r\n'],
  ['a control character in the request target', 'GET /a\x01b HTTP/1.1\r\nHost: h\r\n\r\n'],
  ['a fragment in the request target', 'GET /a?b=1#frag HTTP/1.1\r\nHost: h\r\n\r\n'],
  ['a fragment in an absolute-form target', 'GET http://h#frag HTTP/1.1\r\nHost: h\r\n\r\n'],
  ['two spaces after the method', 'GET  / HTTP/1.1\r\nHost: h\r\n\r\n'],
]

describe('malformed or ambiguous requests are refused before anything is forwarded', () => {
  it.each(BAD_REQUESTS)('answers 400 bad_request to %s and forwards nothing', async (_name, bytes) => {
    const { port, up } = await setup()
    const ex = await exchange(port, bytes)
    expectRefusal(ex, 400, 'bad_request')
    await expectNothingForwarded(port, up)
  })

  it('answers a head with bare LF line endings at once, not at the header timeout', async () => {
    const { port, up } = await setup({ timeouts: { headersMs: 10_000 } })
    const ex = await exchange(port, 'GET / HTTP/1.1\nHost: h\n\n', 3000)
    expectRefusal(ex, 400, 'bad_request')
    expect(ex.elapsedMs).toBeLessThan(1000)
    await expectNothingForwarded(port, up)
  })

  it('answers an HTTP/0.9 request line ("GET /" then CRLF) at once, not at the header timeout', async () => {
    const { port, up } = await setup({ timeouts: { headersMs: 10_000 } })
    const ex = await exchange(port, 'GET /\r\n', 1100)
    expectRefusal(ex, 400, 'bad_request')
    expect(ex.elapsedMs).toBeLessThan(1000)
    await expectNothingForwarded(port, up)
  })

  it('forwards an absolute-form target whose authority matches Host in origin-form', async () => {
    const { port, up } = await setup()
    const ex = await exchange(port, 'GET http://App.Example.com:8080/p/q?x=1 HTTP/1.1\r\nHost: app.example.com:8080\r\nConnection: close\r\n\r\n')
    expect(finalResponse(ex.raw).status).toBe(200)
    expect(up.requests).toHaveLength(1)
    expect(up.requests[0].head.split('\r\n')[0]).toBe('GET /p/q?x=1 HTTP/1.1')
    expect(up.requests[0].all('host')).toEqual(['app.example.com:8080'])
  })

  it('forwards "OPTIONS *" as is', async () => {
    const { port, up } = await setup()
    const ex = await exchange(port, 'OPTIONS * HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n')
    expect(finalResponse(ex.raw).status).toBe(200)
    expect(up.requests.map((r) => r.head.split('\r\n')[0])).toEqual(['OPTIONS * HTTP/1.1'])
  })

  it('forwards a chunked body announced as "Transfer-Encoding: Chunked" (codings are case-insensitive)', async () => {
    const { port, up } = await setup()
    const ex = await exchange(port, 'POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n')
    expect(finalResponse(ex.raw).status).toBe(200)
    expect(up.requests[0].body.toString()).toBe('5\r\nhello\r\n0\r\n\r\n')
  })

  it('forwards an HTTP/1.0 request without Host', async () => {
    const { port, up } = await setup()
    const ex = await exchange(port, 'GET /old HTTP/1.0\r\n\r\n')
    expect(finalResponse(ex.raw).status).toBe(200)
    expect(up.requests.map((r) => r.target)).toEqual(['/old'])
  })
})

describe('malformed chunked request bodies', () => {
  const BAD_CHUNKS: [string, string][] = [
    ['a chunk size that is not hex', 'zz\r\nhello\r\n0\r\n\r\n'],
    ['chunk data not followed by CRLF', '5\r\nhelloXX\r\n0\r\n\r\n'],
    ['an oversized chunk size', '10000000000000000\r\nhello\r\n'],
    ['a chunk size line ended by a bare LF', '5\nhello\r\n0\r\n\r\n'],
    ['a negative chunk size', '-5\r\nhello\r\n0\r\n\r\n'],
  ]

  it.each(BAD_CHUNKS)('answers 400 bad_request to %s after the head went upstream, and closes that upstream connection', async (_name, bad) => {
    const { port, up } = await setup()
    const client = scope.client(port)
    client.socket.write('POST /upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n')
    const req = await within(up.nextHead(), 2000, 'the request head upstream')
    client.socket.write(bad)
    const raw = await client.waitFor(/\r\n\r\n[\s\S]*$/)
    const res = finalResponse(raw)
    expect({ status: res.status, code: res.get('x-gateway-error') }).toEqual({ status: 400, code: 'bad_request' })
    await within(req.conn.closedPromise, 1000, 'the upstream connection that got the head to close')
    await within(socketClosed(client.socket), 1000, 'the client connection to close')
    // The upstream never got a complete request, so it never answered.
    expect(up.requests[0].body.toString('latin1')).not.toContain('0\r\n\r\n')
    // The next request goes on a fresh upstream connection.
    const next = await exchange(port, 'GET /next HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n')
    expect(finalResponse(next.raw).status).toBe(200)
    const last = up.requests[up.requests.length - 1]
    expect(last.target).toBe('/next')
    expect(last.conn).not.toBe(req.conn)
  })

  it('answers 400 bad_request to a malformed chunked body sent together with its head', async () => {
    const { port, up } = await setup()
    const ex = await exchange(port, 'POST /upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n')
    expectRefusal(ex, 400, 'bad_request')
    for (const c of up.connections) await within(c.closedPromise, 1000, 'every upstream connection that saw it to close')
    expect(up.requests.every((r) => !r.body.toString('latin1').includes('zz'))).toBe(true)
  })
})

describe('limits', () => {
  it('answers 431 headers_too_large to a head over limits.maxHeaderBytes and forwards nothing', async () => {
    const { port, up } = await setup({ limits: { maxHeaderBytes: 1024 } })
    const ex = await exchange(port, `GET / HTTP/1.1\r\nHost: h\r\nX-Big: ${'a'.repeat(2000)}\r\n\r\n`)
    expectRefusal(ex, 431, 'headers_too_large')
    await expectNothingForwarded(port, up)
  })

  it('answers 431 as soon as an unfinished head passes limits.maxHeaderBytes', async () => {
    const { port, up } = await setup({ limits: { maxHeaderBytes: 1024 }, timeouts: { headersMs: 10_000 } })
    const ex = await exchange(port, `GET / HTTP/1.1\r\nHost: h\r\nX-Big: ${'a'.repeat(4000)}`)
    expectRefusal(ex, 431, 'headers_too_large')
    expect(ex.elapsedMs).toBeLessThan(1000)
    await expectNothingForwarded(port, up)
  })

  it('forwards a head just under limits.maxHeaderBytes', async () => {
    const { port, up } = await setup({ limits: { maxHeaderBytes: 1024 } })
    const head = 'GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\nX-Fill: '
    const bytes = `${head}${'a'.repeat(1024 - head.length - 4 - 10)}\r\n\r\n`
    const ex = await exchange(port, bytes)
    expect(finalResponse(ex.raw).status).toBe(200)
    expect(up.requests).toHaveLength(1)
  })

  it('answers 431 headers_too_large to more than limits.maxHeaderCount header fields, never truncating them', async () => {
    const { port, up } = await setup({ limits: { maxHeaderCount: 10 } })
    let head = 'GET / HTTP/1.1\r\nHost: h\r\n'
    for (let i = 0; i < 12; i++) head += `X-H${i}: v\r\n`
    const ex = await exchange(port, `${head}\r\n`)
    expectRefusal(ex, 431, 'headers_too_large')
    await expectNothingForwarded(port, up)
  })

  it('answers 413 body_too_large by Content-Length before reading any body, and forwards nothing', async () => {
    const { port, up } = await setup({ limits: { maxBodyBytes: 1000 } })
    // No body is sent: the answer must come from the Content-Length alone.
    const ex = await exchange(port, 'POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 5000\r\n\r\n')
    expectRefusal(ex, 413, 'body_too_large')
    expect(ex.elapsedMs).toBeLessThan(1000)
    await expectNothingForwarded(port, up)
  })

  it('answers 413 body_too_large when a chunked body grows past limits.maxBodyBytes, and the upstream never gets a complete request', async () => {
    const { port, up } = await setup({ limits: { maxBodyBytes: 1000 } })
    const chunk = `200\r\n${'x'.repeat(512)}\r\n`
    const ex = await exchange(port, `POST /upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n${chunk}${chunk}${chunk}0\r\n\r\n`)
    expectRefusal(ex, 413, 'body_too_large')
    for (const c of up.connections) await within(c.closedPromise, 1000, 'the upstream connection to close')
    for (const r of up.requests) expect(r.body.length).toBeLessThanOrEqual(1000 + 64)
  })

  it('forwards a chunked body within limits.maxBodyBytes', async () => {
    const { port, up } = await setup({ limits: { maxBodyBytes: 1000 } })
    const ex = await exchange(port, `POST /upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n384\r\n${'x'.repeat(900)}\r\n0\r\n\r\n`)
    expect(finalResponse(ex.raw).status).toBe(200)
    expect(up.requests[0].body.length).toBe(5 + 900 + 2 + 5)
  })
})

describe('slow clients', () => {
  it('answers 408 request_timeout to a client trickling its head, within a second of timeouts.headersMs', async () => {
    const headersMs = 500
    const { port, up } = await setup({ timeouts: { headersMs } })
    const socket = await scope.connect(port)
    const started = Date.now()
    const chunks: Buffer[] = []
    socket.on('data', (d: Buffer) => chunks.push(d))
    socket.write('GET / HTTP/1.1\r\nHost: h\r\nX-Slow: ')
    const trickle = setInterval(() => { if (!socket.destroyed) socket.write('a') }, 100)
    scope.defer(() => clearInterval(trickle))
    await within(socketClosed(socket), headersMs + 2000, 'the gateway to close a slowloris connection')
    clearInterval(trickle)
    const elapsed = Date.now() - started
    const res = finalResponse(Buffer.concat(chunks).toString('latin1'))
    expect({ status: res.status, code: res.get('x-gateway-error') }).toEqual({ status: 408, code: 'request_timeout' })
    expect(elapsed).toBeGreaterThanOrEqual(headersMs - COARSE_MS)
    expect(elapsed).toBeLessThan(headersMs + 1000)
    await expectNothingForwarded(port, up)
  })

  it('answers 408 request_timeout to a second request on a keep-alive connection that trickles its head', async () => {
    const headersMs = 500
    const { port } = await setup({ timeouts: { headersMs, keepAliveMs: 10_000 } })
    const client = scope.client(port)
    client.socket.write('GET /first HTTP/1.1\r\nHost: h\r\n\r\n')
    const first = await client.waitFor('/first')
    const started = Date.now()
    client.socket.write('GET /second HTTP/1.1\r\nHost: h\r\nX-Slow: ')
    const trickle = setInterval(() => { if (!client.socket.destroyed) client.socket.write('a') }, 100)
    scope.defer(() => clearInterval(trickle))
    await within(socketClosed(client.socket), headersMs + 1200, 'the gateway to close the slow keep-alive connection')
    clearInterval(trickle)
    const elapsed = Date.now() - started
    const res = finalResponse(client.received().slice(first.length))
    expect({ status: res.status, code: res.get('x-gateway-error') }).toEqual({ status: 408, code: 'request_timeout' })
    expect(elapsed).toBeLessThan(headersMs + 1000)
  })

  it('closes a connection that never sends a byte within a second of timeouts.headersMs', async () => {
    const headersMs = 500
    const { port } = await setup({ timeouts: { headersMs } })
    const socket = await scope.connect(port)
    const end = await within(socketClosed(socket), headersMs + 2000, 'the gateway to close a silent connection')
    expect(end.elapsedMs).toBeLessThan(headersMs + 1000)
  })

  it('closes a connection to the HTTPS listener that never completes its TLS handshake within a second of timeouts.headersMs', async () => {
    const headersMs = 500
    const { up, port } = await httpsGateway({ timeouts: { headersMs } })
    const socket = await scope.connect(port)
    socket.write(Buffer.from([0x16, 0x03, 0x01])) // the first bytes of a ClientHello, then nothing
    const end = await within(socketClosed(socket), headersMs + 2000, 'the gateway to drop a stalled TLS handshake')
    expect(end.elapsedMs).toBeLessThan(headersMs + 1000)
    expect(up.connections).toHaveLength(0)
  })

  it('closes at once a connection to the HTTPS listener whose client leaves mid-handshake', async () => {
    const { up, port } = await httpsGateway({ timeouts: { headersMs: 10_000 } })
    const socket = await scope.connect(port)
    socket.end(Buffer.from([0x16, 0x03, 0x01])) // the first bytes of a ClientHello, then its FIN
    const end = await within(socketClosed(socket, 12_000), 12_000, 'the gateway to close a handshake its client left')
    expect(end.elapsedMs).toBeLessThan(1000) // not the 10 s handshake deadline
    expect(up.connections).toHaveLength(0)
  })

  it('still answers an HTTPS client that half-closes right after its request', async () => {
    const { port } = await httpsGateway({}, (req, socket) => {
      // Answers once the gateway has it all, a moment after the client's FIN reached the gateway.
      setImmediate(() => socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${req.target.length}\r\n\r\n${req.target}`))
    })
    const secure = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', rejectUnauthorized: false })
    secure.on('error', () => {})
    scope.defer(() => secure.destroy())
    await once(secure, 'secureConnect')
    const chunks: Buffer[] = []
    secure.on('data', (d: Buffer) => chunks.push(d))
    secure.end('GET /half-closed HTTP/1.1\r\nHost: localhost\r\n\r\n')
    await within(once(secure, 'close'), 5000, 'the answer and the close')
    const res = finalResponse(Buffer.concat(chunks).toString('latin1'))
    expect({ status: res.status, body: res.body }).toEqual({ status: 200, body: '/half-closed' })
  })

  it('closes an idle keep-alive connection quietly after timeouts.keepAliveMs', async () => {
    const keepAliveMs = 400
    const { port } = await setup({ timeouts: { keepAliveMs } })
    const client = scope.client(port)
    client.socket.write('GET /first HTTP/1.1\r\nHost: h\r\n\r\n')
    const first = await client.waitFor('/first')
    const answeredAt = Date.now()
    const res = finalResponse(first)
    expect(res.status).toBe(200)
    expect(res.get('connection')?.toLowerCase()).not.toBe('close')
    const end = await within(socketClosed(client.socket), keepAliveMs + 2000, 'the idle keep-alive connection to close')
    const idle = Date.now() - answeredAt
    expect(idle).toBeGreaterThanOrEqual(keepAliveMs - COARSE_MS)
    expect(idle).toBeLessThan(keepAliveMs + 1000)
    expect(client.received(), 'nothing is written on a quiet close').toBe(first)
    expect(end.error).toBeNull()
  })
})
