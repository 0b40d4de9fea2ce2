// A listener with `proxyProtocol` sits behind a TCP load balancer that announces each client
// with a PROXY header (HAProxy's `accept-proxy`): only the load balancers in `trustedProxies`
// may connect, each connection must start with a v1 or v2 header, and the address in it is the
// client's (X-Forwarded-For, maxConnectionsPerClient). Anything else is closed without a word.

import { once } from 'node:events'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Duplex } from 'node:stream'
import tls from 'node:tls'
import { describe, expect, it } from 'vitest'
import { applyDefaults } from '../../src/config/defaults.js'
import { validateConfig } from '../../src/config/validate.js'
import { createCertificates } from '../../src/listeners/certificate-authority.js'
import { gatewayEvent } from '../../src/observability/channels.js'
import { admin } from '../admin/admin-client.js'
import { finalResponse } from '../helpers/http-bytes.js'
import { recordingUpstream, type RecordingUpstream, type UpstreamRequest } from '../helpers/recording-upstream.js'
import { exchange, socketClosed, useTestScope, within } from '../helpers/test-scope.js'
import { freePort } from '../helpers/upstream.js'

const scope = useTestScope()

// The gateway's deadlines run on a coarse clock (src/timers.ts, 250 ms sweeps), so a deadline
// may fire up to one sweep early; the lower bound only rules out a wrong (much shorter) timeout.
const COARSE_MS = 260

// ---- PROXY headers ---------------------------------------------------------------------

const v1 = (family: 'TCP4' | 'TCP6', src: string, dst: string, srcPort = 56324, dstPort = 443): string =>
  `PROXY ${family} ${src} ${dst} ${srcPort} ${dstPort}\r\n`

const SIGNATURE = Buffer.from('0d0a0d0a000d0a515549540a', 'hex')

/** A v2 header: signature, version/command, family/protocol, the length of `rest`, then `rest`. */
function v2(command: number, family: number, rest: Buffer = Buffer.alloc(0)): Buffer {
  const fixed = Buffer.alloc(4)
  fixed[0] = command
  fixed[1] = family
  fixed.writeUInt16BE(rest.length, 2)
  return Buffer.concat([SIGNATURE, fixed, rest])
}

/** A v2 PROXY header for TCP over IPv4 (0x21 0x11), with a PP2_TYPE_AUTHORITY TLV after it. */
function v2Tcp4(src: string, dst: string, srcPort = 56324, dstPort = 443): Buffer {
  const block = Buffer.alloc(12)
  Buffer.from(src.split('.').map(Number)).copy(block, 0)
  Buffer.from(dst.split('.').map(Number)).copy(block, 4)
  block.writeUInt16BE(srcPort, 8)
  block.writeUInt16BE(dstPort, 10)
  const authority = Buffer.from('ide.example.com')
  const tlv = Buffer.concat([Buffer.from([0x02, 0, authority.length]), authority])
  return v2(0x21, 0x11, Buffer.concat([block, tlv]))
}

/** A v2 PROXY header for TCP over IPv6 (0x21 0x21); addresses as 16 raw bytes. */
function v2Tcp6(src: Buffer, dst: Buffer, srcPort = 56324, dstPort = 443): Buffer {
  const p = Buffer.alloc(4)
  p.writeUInt16BE(srcPort, 0)
  p.writeUInt16BE(dstPort, 2)
  return v2(0x21, 0x21, Buffer.concat([src, dst, p]))
}

/** v2 LOCAL (0x20, UNSPEC): a load balancer's own health check. */
const V2_LOCAL = v2(0x20, 0x00)

const request = (path: string, extra = ''): string => `GET ${path} HTTP/1.1\r\nHost: ide.example.com\r\n${extra}Connection: close\r\n\r\n`

// ---- gateways and clients -----------------------------------------------------------------

const TRUST_LOOPBACK = { trustedProxies: ['127.0.0.1'] }

interface Proxied {
  up: RecordingUpstream
  port: number
}

/** A gateway whose one plain listener ("http" on 127.0.0.1) takes PROXY headers. */
async function proxied(proxyProtocol: Record<string, unknown> = TRUST_LOOPBACK, config: Record<string, unknown> = {}, host = '127.0.0.1'): Promise<Proxied> {
  const up = await recordingUpstream()
  scope.defer(() => up.close())
  const gw = await scope.gateway(up.target, {
    listeners: [{ name: 'http', port: 0, host, proxyProtocol }],
    ...config,
  })
  return { up, port: gw.port() }
}

/** One request through the gateway after `header`; returns what the upstream saw. */
async function forwardedAfter(p: Proxied, header: string | Buffer, path = '/x'): Promise<UpstreamRequest> {
  const ex = await exchange(p.port, Buffer.concat([Buffer.from(header), Buffer.from(request(path))]))
  expect(finalResponse(ex.raw).status).toBe(200)
  const req = p.up.requests.find((r) => r.target === path)
  expect(req, `the upstream got ${path}`).toBeDefined()
  return req!
}

/** A raw socket connected to `port` on `host`, from `localAddress` if given; destroyed after the test. */
async function connectFrom(port: number, host = '127.0.0.1', localAddress?: string): Promise<net.Socket> {
  const s = net.connect({ port, host, localAddress })
  s.on('error', () => {})
  scope.defer(() => s.destroy())
  await once(s, 'connect')
  return s
}

/** Everything a socket receives, latin1. */
function collect(socket: net.Socket | tls.TLSSocket): () => string {
  const chunks: Buffer[] = []
  socket.on('data', (d: Buffer) => chunks.push(d))
  return () => Buffer.concat(chunks).toString('latin1')
}

/**
 * `send` writes a PROXY header and a request for `path` on `socket` (as it likes: one write,
 * several, a byte at a time); checks the answer is a 200 and returns the X-Forwarded-For the
 * upstream saw on that request.
 */
async function servedOn(p: Proxied, socket: net.Socket, path: string, send: () => Promise<unknown> | void): Promise<string[]> {
  const received = collect(socket)
  const closed = socketClosed(socket)
  await send()
  await within(closed, 3000, 'the gateway to close after answering')
  expect(finalResponse(received()).status).toBe(200)
  return p.up.requests.find((r) => r.target === path)?.all('x-forwarded-for') ?? []
}

/** Writes `bytes` one at a time, each flushed to the kernel before the next (Nagle off). */
async function trickle(socket: net.Socket, bytes: Buffer): Promise<void> {
  socket.setNoDelay(true)
  for (const b of bytes) {
    await new Promise<void>((resolve, reject) => socket.write(Buffer.from([b]), (err) => (err ? reject(err) : resolve())))
    // Pacing, not waiting for a condition: gives the gateway a read per byte.
    await new Promise((r) => setTimeout(r, 2))
  }
}

/**
 * The gateway closed `socket` without writing a byte and without waiting for its header
 * timeout (10 s in these tests), and the upstream saw nothing.
 */
async function expectSilentClose(socket: net.Socket, received: () => string, up: RecordingUpstream): Promise<void> {
  const end = await socketClosed(socket, 3000)
  expect(received(), 'bytes the gateway wrote').toBe('')
  expect(end.elapsedMs).toBeLessThan(2000)
  expect(up.connections.length, 'upstream connections').toBe(0)
}

/** Whether this host can bind and reach IPv6 loopback. */
async function ipv6Loopback(): Promise<boolean> {
  const server = net.createServer((s) => s.destroy())
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(0, '::1', () => resolve())
    })
    const s = net.connect((server.address() as net.AddressInfo).port, '::1')
    const ok = await new Promise<boolean>((resolve) => {
      s.once('connect', () => resolve(true))
      s.once('error', () => resolve(false))
    })
    s.destroy()
    return ok
  } catch {
    return false
  } finally {
    server.close()
  }
}

const HAS_IPV6 = await ipv6Loopback()

// ---- the tests ---------------------------------------------------------------------------

describe('a listener with proxyProtocol, from a trusted proxy', () => {
  it('takes the client address from a v1 TCP4 header sent with the request', async () => {
    const p = await proxied()
    const req = await forwardedAfter(p, v1('TCP4', '192.0.2.1', '198.51.100.2'))
    expect(req.all('x-forwarded-for')).toEqual(['192.0.2.1'])
    // The header is the gateway's, not the upstream's: the request line comes first.
    expect(req.conn.received.toString('latin1')).toMatch(/^GET \/x HTTP\/1\.1\r\n/)
  })

  it('takes the client address from a v1 TCP6 header', async () => {
    const p = await proxied()
    const req = await forwardedAfter(p, v1('TCP6', '2001:db8::7', '2001:db8::1'))
    expect(req.all('x-forwarded-for')).toEqual(['2001:db8::7'])
  })

  it('takes the client address from a v2 TCP4 header with TLVs, the request in a later write', async () => {
    const p = await proxied()
    const socket = await connectFrom(p.port)
    expect(await servedOn(p, socket, '/later', async () => {
      await new Promise<void>((resolve) => socket.write(v2Tcp4('203.0.113.5', '198.51.100.2'), () => resolve()))
      socket.write(request('/later'))
    })).toEqual(['203.0.113.5'])
    expect(p.up.requests).toHaveLength(1)
  })

  it('takes the client address from a v2 TCP6 header, in compressed form', async () => {
    const p = await proxied()
    const src = Buffer.from('20010db8000000000000000000000042', 'hex')
    const dst = Buffer.from('20010db8000000000000000000000001', 'hex')
    const req = await forwardedAfter(p, v2Tcp6(src, dst))
    expect(req.all('x-forwarded-for')).toEqual(['2001:db8::42'])
  })

  it('uses the proxy\'s own address for a v2 LOCAL header (a health check)', async () => {
    const p = await proxied()
    const req = await forwardedAfter(p, V2_LOCAL)
    expect(req.all('x-forwarded-for')).toEqual(['127.0.0.1'])
  })

  it('uses the proxy\'s own address for "PROXY UNKNOWN"', async () => {
    const p = await proxied()
    const req = await forwardedAfter(p, 'PROXY UNKNOWN\r\n')
    expect(req.all('x-forwarded-for')).toEqual(['127.0.0.1'])
  })

  it('appends the header\'s address to an X-Forwarded-For the client sent', async () => {
    const p = await proxied()
    const ex = await exchange(p.port, v1('TCP4', '192.0.2.1', '198.51.100.2') + request('/x', 'X-Forwarded-For: 203.0.113.9\r\n'))
    expect(finalResponse(ex.raw).status).toBe(200)
    expect(p.up.requests[0].all('x-forwarded-for')).toEqual(['203.0.113.9, 192.0.2.1'])
  })

  it('keeps the header\'s address for every request on the connection', async () => {
    const p = await proxied()
    const client = scope.client(p.port)
    await once(client.socket, 'connect')
    client.socket.write(`${v1('TCP4', '192.0.2.1', '198.51.100.2')}GET /one HTTP/1.1\r\nHost: h\r\n\r\n`)
    await client.waitFor('/one')
    client.socket.write('GET /two HTTP/1.1\r\nHost: h\r\n\r\n')
    await client.waitFor('/two')
    expect(p.up.requests.map((r) => [r.target, r.all('x-forwarded-for')])).toEqual([
      ['/one', ['192.0.2.1']],
      ['/two', ['192.0.2.1']],
    ])
  })

  it('reads a v1 header trickled one byte at a time', async () => {
    const p = await proxied()
    const socket = await connectFrom(p.port)
    expect(await servedOn(p, socket, '/trickled', async () => {
      await trickle(socket, Buffer.from(v1('TCP4', '192.0.2.77', '198.51.100.2')))
      socket.write(request('/trickled'))
    })).toEqual(['192.0.2.77'])
    expect(p.up.requests).toHaveLength(1)
  })

  it('reads a v2 header trickled one byte at a time', async () => {
    const p = await proxied()
    const socket = await connectFrom(p.port)
    expect(await servedOn(p, socket, '/trickled', async () => {
      await trickle(socket, v2Tcp4('192.0.2.78', '198.51.100.2'))
      socket.write(request('/trickled'))
    })).toEqual(['192.0.2.78'])
    expect(p.up.requests).toHaveLength(1)
  })

  it('trusts a proxy by CIDR range', async () => {
    const p = await proxied({ trustedProxies: ['10.0.0.0/8', '127.0.0.0/30'] })
    const socket = await connectFrom(p.port, '127.0.0.1', '127.0.0.2')
    expect(await servedOn(p, socket, '/cidr', () => { socket.write(v1('TCP4', '192.0.2.1', '198.51.100.2') + request('/cidr')) })).toEqual(['192.0.2.1'])
  })

  it.skipIf(!HAS_IPV6)('matches an IPv4 peer seen as "::ffff:127.0.0.1" on a dual-stack listener against "127.0.0.1"', async () => {
    const p = await proxied(TRUST_LOOPBACK, {}, '::')
    const socket = await connectFrom(p.port, '127.0.0.1')
    expect(await servedOn(p, socket, '/dual', () => { socket.write(v1('TCP4', '192.0.2.9', '198.51.100.2') + request('/dual')) })).toEqual(['192.0.2.9'])
  })

  it.skipIf(!HAS_IPV6)('trusts an IPv6 proxy', async () => {
    const p = await proxied({ trustedProxies: ['fd00::/8', '::1'] }, {}, '::1')
    const socket = await connectFrom(p.port, '::1')
    expect(await servedOn(p, socket, '/v6', () => { socket.write(v1('TCP4', '192.0.2.10', '198.51.100.2') + request('/v6')) })).toEqual(['192.0.2.10'])
  })
})

describe('a listener with proxyProtocol closes, without a response and forwarding nothing', () => {
  it.each([
    ['a single other address', ['10.9.9.9']],
    ['a range next to it', ['127.0.0.2/31', '10.0.0.0/8']],
    ['only the IPv6 loopback', ['::1']],
  ])('a connection from a peer not in trustedProxies (%s), at once and before it sends anything', async (_name, trustedProxies) => {
    const p = await proxied({ trustedProxies }, { timeouts: { headersMs: 10_000 } })
    const socket = await connectFrom(p.port)
    const received = collect(socket)
    await expectSilentClose(socket, received, p.up)
  })

  it('a connection from a peer whose address only starts like a trusted one', async () => {
    const p = await proxied(TRUST_LOOPBACK, { timeouts: { headersMs: 10_000 } })
    const socket = await connectFrom(p.port, '127.0.0.1', '127.0.0.10')
    const received = collect(socket)
    await expectSilentClose(socket, received, p.up)
  })

  it('a connection from an untrusted peer even with a valid header and request', async () => {
    const p = await proxied({ trustedProxies: ['10.9.9.9'] }, { timeouts: { headersMs: 10_000 } })
    const ex = await exchange(p.port, v1('TCP4', '192.0.2.1', '198.51.100.2') + request('/x'))
    expect(ex.raw).toBe('')
    expect(ex.closed).toBe(true)
    expect(p.up.connections).toHaveLength(0)
  })

  it('a plain HTTP request with no PROXY header, at once, and still serves the next proxied one', async () => {
    const p = await proxied(TRUST_LOOPBACK, { timeouts: { headersMs: 10_000 } })
    const ex = await exchange(p.port, request('/no-header'))
    expect(ex.raw, 'bytes the gateway wrote').toBe('')
    expect(ex.closed).toBe(true)
    expect(ex.elapsedMs).toBeLessThan(2000)
    expect(p.up.connections).toHaveLength(0)
    const next = await forwardedAfter(p, v1('TCP4', '192.0.2.1', '198.51.100.2'), '/next')
    expect(next.all('x-forwarded-for')).toEqual(['192.0.2.1'])
    expect(p.up.requests.map((r) => r.target)).toEqual(['/next'])
  })

  const MALFORMED: [string, string | Buffer][] = [
    ['a TCP4 header with an IPv6 address', v1('TCP4', '2001:db8::1', '198.51.100.2')],
    ['a TCP6 header with IPv4 addresses', v1('TCP6', '192.0.2.1', '198.51.100.2')],
    ['a bad IPv4 address', v1('TCP4', '192.0.2.300', '198.51.100.2')],
    ['port 65536', v1('TCP4', '192.0.2.1', '198.51.100.2', 65536)],
    ['a missing field', 'PROXY TCP4 192.0.2.1 198.51.100.2 56324\r\n'],
    ['a bare LF', 'PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\n'],
    ['a v1 header over 107 bytes', `PROXY UNKNOWN ${'x'.repeat(100)}\r\n`],
    ['a v2 header of version 1', Buffer.concat([SIGNATURE, Buffer.from([0x11, 0x00, 0x00, 0x00])])],
    ['a v2 header with an unknown command', Buffer.concat([SIGNATURE, Buffer.from([0x23, 0x00, 0x00, 0x00])])],
    ['a v2 header for UDP over IPv4', Buffer.concat([SIGNATURE, Buffer.from([0x21, 0x12, 0x00, 0x0c]), Buffer.alloc(12, 1)])],
    ['a v2 header for UDP over IPv6', Buffer.concat([SIGNATURE, Buffer.from([0x21, 0x22, 0x00, 0x24]), Buffer.alloc(36, 1)])],
    ['a v2 header too short for its family', Buffer.concat([SIGNATURE, Buffer.from([0x21, 0x11, 0x00, 0x08]), Buffer.alloc(8, 1)])],
    ['a v2 header over 16 + 4096 bytes', Buffer.concat([SIGNATURE, Buffer.from([0x21, 0x11, 0x10, 0x01]), Buffer.alloc(4097, 1)])],
  ]

  it.each(MALFORMED)('a connection starting with %s', async (_name, header) => {
    const p = await proxied(TRUST_LOOPBACK, { timeouts: { headersMs: 10_000 } })
    const ex = await exchange(p.port, Buffer.concat([Buffer.from(header), Buffer.from(request('/x'))]))
    expect(ex.raw, 'bytes the gateway wrote').toBe('')
    expect(ex.closed).toBe(true)
    expect(ex.elapsedMs).toBeLessThan(2000)
    expect(p.up.connections).toHaveLength(0)
  })

  it.each([
    ['nothing at all', ''],
    ['part of a v1 header', 'PROXY TCP4 192.0.2.1 198.'],
    ['part of a v2 header', Buffer.concat([SIGNATURE, Buffer.from([0x21, 0x11, 0x00, 0x0c, 192, 0])])],
  ])('a connection that sends %s within timeouts.headersMs, when it runs out', async (_name, partial) => {
    const headersMs = 500
    const p = await proxied(TRUST_LOOPBACK, { timeouts: { headersMs } })
    const socket = await connectFrom(p.port)
    const received = collect(socket)
    if (partial.length > 0) socket.write(partial)
    const end = await socketClosed(socket, 5000)
    expect(received(), 'bytes the gateway wrote (no 408: there is no HTTP yet)').toBe('')
    expect(end.elapsedMs).toBeGreaterThanOrEqual(headersMs - COARSE_MS)
    expect(end.elapsedMs).toBeLessThan(headersMs + COARSE_MS + 1500)
    expect(p.up.connections).toHaveLength(0)
  })
})

describe('proxyProtocol on an HTTPS listener', () => {
  async function httpsProxied(): Promise<Proxied> {
    const dir = mkdtempSync(join(tmpdir(), 'gw-proxy-tls-'))
    scope.defer(() => rmSync(dir, { recursive: true, force: true }))
    const files = await createCertificates({ outDir: dir, hosts: ['localhost'] })
    const up = await recordingUpstream()
    scope.defer(() => up.close())
    const gw = await scope.gateway(up.target, {
      listeners: [{ name: 'https', port: 0, host: '127.0.0.1', tls: { cert: files.cert, key: files.key }, proxyProtocol: TRUST_LOOPBACK }],
      timeouts: { headersMs: 10_000 },
    })
    return { up, port: gw.port('https') }
  }

  /** The status of the answer to a request for `path` over `secure`, once it is through its handshake. */
  async function answeredOver(secure: tls.TLSSocket, path: string): Promise<number> {
    secure.on('error', () => {})
    scope.defer(() => secure.destroy())
    const received = collect(secure)
    await within(once(secure, 'secureConnect'), 3000, 'the TLS handshake after the PROXY header')
    const closed = once(secure, 'close')
    secure.write(request(path))
    await within(closed, 3000, 'the gateway to close after answering')
    return finalResponse(received()).status
  }

  it('reads the PROXY header before the TLS handshake, and forwards the request with its address', async () => {
    const p = await httpsProxied()
    const socket = await connectFrom(p.port)
    await new Promise<void>((resolve) => socket.write(v1('TCP4', '192.0.2.44', '198.51.100.2', 50000, 443), () => resolve()))
    const secure = tls.connect({ socket, servername: 'localhost', rejectUnauthorized: false })
    expect(await answeredOver(secure, '/tls')).toBe(200)
    expect(p.up.requests).toHaveLength(1)
    expect(p.up.requests[0].all('x-forwarded-for')).toEqual(['192.0.2.44'])
    expect(p.up.requests[0].get('x-forwarded-proto')).toBe('https')
  })

  it('reads a v2 header sent in the same packet as the ClientHello', async () => {
    const p = await httpsProxied()
    const socket = await connectFrom(p.port)
    const secure = tls.connect({ socket: prefixed(socket, v2Tcp4('192.0.2.45', '198.51.100.2')), servername: 'localhost', rejectUnauthorized: false })
    expect(await answeredOver(secure, '/tls')).toBe(200)
    expect(p.up.requests[0].all('x-forwarded-for')).toEqual(['192.0.2.45'])
  })

  it('closes a TLS handshake that comes with no PROXY header, without completing it', async () => {
    const p = await httpsProxied()
    const socket = await connectFrom(p.port)
    const secure = tls.connect({ socket, servername: 'localhost', rejectUnauthorized: false })
    let secured = false
    secure.on('secureConnect', () => { secured = true })
    secure.on('error', () => {})
    scope.defer(() => secure.destroy())
    const end = await socketClosed(secure, 3000)
    expect(secured).toBe(false)
    expect(end.elapsedMs).toBeLessThan(2000)
    expect(p.up.connections).toHaveLength(0)
  })
})

/**
 * `socket` as a stream whose first write (a TLS client's ClientHello) goes out with `prefix`
 * in front of it, in one write: a proxy that sends its header and the client's first bytes
 * in one packet.
 */
function prefixed(socket: net.Socket, prefix: Buffer): Duplex {
  let first = true
  const stream = new Duplex({
    read() { socket.resume() },
    write(chunk: Buffer, _encoding, callback) {
      socket.write(first ? Buffer.concat([prefix, chunk]) : chunk, callback)
      first = false
    },
    final(callback) { socket.end(callback) },
    destroy(err, callback) {
      socket.destroy()
      callback(err)
    },
  })
  socket.on('data', (b: Buffer) => { if (!stream.push(b)) socket.pause() })
  socket.on('end', () => stream.push(null))
  socket.on('close', () => stream.destroy())
  return stream
}

describe('maxConnectionsPerClient behind a PROXY header', () => {
  it('counts connections by the header\'s source address, not by the proxy\'s', async () => {
    const p = await proxied(TRUST_LOOPBACK, { limits: { maxConnectionsPerClient: 1 } })
    // One connection from 192.0.2.1 stays open (kept alive after its request).
    const first = scope.client(p.port)
    await once(first.socket, 'connect')
    first.socket.write(`${v1('TCP4', '192.0.2.1', '198.51.100.2')}GET /first HTTP/1.1\r\nHost: h\r\n\r\n`)
    await first.waitFor('/first')

    // Another client through the same proxy is not limited with it.
    const other = await exchange(p.port, v1('TCP4', '192.0.2.2', '198.51.100.2') + request('/other'))
    expect(finalResponse(other.raw).status).toBe(200)

    // A second connection from 192.0.2.1 is over its limit: refused, never forwarded.
    const again = await exchange(p.port, v1('TCP4', '192.0.2.1', '198.51.100.2') + request('/again'))
    expect(again.closed).toBe(true)
    const res = finalResponse(again.raw)
    expect({ status: res.status, code: res.get('x-gateway-error') }).toEqual({ status: 503, code: 'over_capacity' })
    expect(p.up.requests.map((r) => r.target)).toEqual(['/first', '/other'])

    // Once the first connection is gone, 192.0.2.1 may connect again.
    const gone = socketClosed(first.socket)
    first.socket.destroy()
    await gone
    const after = await retryUntilServed(p, () => v1('TCP4', '192.0.2.1', '198.51.100.2') + request('/after'))
    expect(after.all('x-forwarded-for')).toEqual(['192.0.2.1'])
  })
})

/**
 * Sends `bytes()` on fresh connections until one is served: the gateway learns of a closed
 * connection asynchronously, so the first attempt may still count it.
 */
async function retryUntilServed(p: Proxied, bytes: () => string): Promise<UpstreamRequest> {
  const deadline = Date.now() + 3000
  for (;;) {
    const before = p.up.requests.length
    const ex = await exchange(p.port, bytes())
    if (ex.raw.startsWith('HTTP/1.1 200')) return p.up.requests[before]
    if (Date.now() > deadline) throw new Error(`never served; last answer ${JSON.stringify(ex.raw.slice(0, 200))}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

describe('a listener without proxyProtocol', () => {
  it('answers a request that starts with a PROXY header 400 bad_request, and forwards nothing', async () => {
    const up = await recordingUpstream()
    scope.defer(() => up.close())
    const gw = await scope.gateway(up.target)
    const ex = await exchange(gw.port(), v1('TCP4', '192.0.2.1', '198.51.100.2') + request('/x'))
    const res = finalResponse(ex.raw)
    expect({ status: res.status, code: res.get('x-gateway-error') }).toEqual({ status: 400, code: 'bad_request' })
    expect(up.connections).toHaveLength(0)
  })

  it('forwards a request with the peer\'s own address', async () => {
    const up = await recordingUpstream()
    scope.defer(() => up.close())
    const gw = await scope.gateway(up.target)
    const ex = await exchange(gw.port(), request('/plain'))
    expect(finalResponse(ex.raw).status).toBe(200)
    expect(up.requests[0].all('x-forwarded-for')).toEqual(['127.0.0.1'])
  })
})

describe('proxyProtocol in the config', () => {
  const listener = (proxyProtocol: unknown, extra: Record<string, unknown> = {}) => ({ name: 'l', port: 8080, proxyProtocol, ...extra })
  const pathsFor = (...listeners: Record<string, unknown>[]): string[] => validateConfig(applyDefaults({ listeners })).map((i) => i.path)

  it('accepts IPv4 and IPv6 addresses and CIDR ranges, on HTTP and HTTPS listeners', () => {
    const trustedProxies = ['127.0.0.1', '10.0.0.0/8', '::1', 'fd00::/8', '192.168.1.0/24', '2001:db8::/32', '0.0.0.0/0', '::/0', '10.1.2.3/32', '::1/128']
    expect(pathsFor(listener({ trustedProxies }))).toEqual([])
    expect(pathsFor(listener({ trustedProxies: ['10.0.0.1'] }, { tls: { cert: 'a.crt', key: 'a.key' } }))).toEqual([])
  })

  it('names each bad entry by its path', () => {
    expect(pathsFor(listener({ trustedProxies: ['127.0.0.1', '10.0.0.0/33'] }))).toEqual(['listeners[0].proxyProtocol.trustedProxies[1]'])
    expect(pathsFor(listener({ trustedProxies: ['127.0.0.1', 'nope'] }))).toEqual(['listeners[0].proxyProtocol.trustedProxies[1]'])
    expect(pathsFor(listener({ trustedProxies: ['127.0.0.1', ''] }))).toEqual(['listeners[0].proxyProtocol.trustedProxies[1]'])
    expect(pathsFor(listener({ trustedProxies: ['fd00::/129'] }))).toEqual(['listeners[0].proxyProtocol.trustedProxies[0]'])
    expect(pathsFor(listener({ trustedProxies: ['10.0.0.256'] }))).toEqual(['listeners[0].proxyProtocol.trustedProxies[0]'])
    expect(pathsFor(listener({ trustedProxies: ['10.0.0.0/'] }))).toEqual(['listeners[0].proxyProtocol.trustedProxies[0]'])
    expect(pathsFor(listener({ trustedProxies: ['10.0.0.0/-1'] }))).toEqual(['listeners[0].proxyProtocol.trustedProxies[0]'])
    expect(pathsFor(listener({ trustedProxies: ['lb.example.com'] }))).toEqual(['listeners[0].proxyProtocol.trustedProxies[0]'])
    expect(pathsFor(listener({ trustedProxies: [127001] }))).toEqual(['listeners[0].proxyProtocol.trustedProxies[0]'])
  })

  it('refuses a range with address bits set past its prefix, which would trust more than it says', () => {
    // BlockList would mask the bits: "::ffff:10.0.0.0/8" is ::/8, every IPv4-mapped peer.
    const issuesOf = (entry: string) => validateConfig(applyDefaults({ listeners: [listener({ trustedProxies: [entry] })] }))
    expect(issuesOf('::ffff:10.0.0.0/8')).toEqual([{
      path: 'listeners[0].proxyProtocol.trustedProxies[0]',
      message: expect.stringContaining('did you mean "::ffff:10.0.0.0/104"?'),
    }])
    expect(pathsFor(listener({ trustedProxies: ['10.0.0.1/8', 'fd00::1/8', '2001:db8:1::/32'] }))).toEqual([0, 1, 2].map((i) => `listeners[0].proxyProtocol.trustedProxies[${i}]`))
    expect(pathsFor(listener({ trustedProxies: ['::ffff:10.0.0.0/104', '10.1.2.3/32', '0.0.0.0/0', '::/0', '2001:db8::/32'] }))).toEqual([])
  })

  it('collects every bad entry, on every listener', () => {
    expect(pathsFor(
      listener({ trustedProxies: ['nope', '127.0.0.1', '10.0.0.0/33'] }),
      listener({ trustedProxies: [''] }, { name: 'm', port: 8081 }),
    )).toEqual([
      'listeners[0].proxyProtocol.trustedProxies[0]',
      'listeners[0].proxyProtocol.trustedProxies[2]',
      'listeners[1].proxyProtocol.trustedProxies[0]',
    ])
  })

  it('refuses an empty, missing or non-array trustedProxies', () => {
    expect(pathsFor(listener({ trustedProxies: [] }))).toEqual(['listeners[0].proxyProtocol.trustedProxies'])
    expect(pathsFor(listener({}))).toEqual(['listeners[0].proxyProtocol.trustedProxies'])
    expect(pathsFor(listener({ trustedProxies: '127.0.0.1' }))).toEqual(['listeners[0].proxyProtocol.trustedProxies'])
  })

  it('refuses unknown keys inside proxyProtocol, and a proxyProtocol that is not an object', () => {
    expect(pathsFor(listener({ trustedProxies: ['127.0.0.1'], trusted: ['10.0.0.1'] }))).toEqual(['listeners[0].proxyProtocol.trusted'])
    expect(pathsFor(listener(true))).toEqual(['listeners[0].proxyProtocol'])
    expect(pathsFor(listener(['127.0.0.1']))).toEqual(['listeners[0].proxyProtocol'])
  })

  it('quotes the bad value in the message', () => {
    const issues = validateConfig(applyDefaults({ listeners: [listener({ trustedProxies: ['10.0.0.0/33'] })] }))
    expect(issues).toEqual([{ path: 'listeners[0].proxyProtocol.trustedProxies[0]', message: expect.stringContaining('"10.0.0.0/33"') }])
  })
})

describe('reloads', () => {
  it('close connections still waiting for their header without reporting them as refused', async () => {
    // The gateway closed them itself: "no whole PROXY header within 300 ms" would send an
    // operator looking for a faulty balancer.
    const headersMs = 300
    const up = await recordingUpstream()
    scope.defer(() => up.close())
    const port = await freePort()
    const gw = await scope.gateway(up.target, { listeners: [{ name: 'http', port, host: '127.0.0.1', proxyProtocol: TRUST_LOOPBACK }], timeouts: { headersMs } })
    const refusals: string[] = []
    const onEvent = (m: unknown): void => { if ((m as { event: string }).event === 'proxy_protocol_refused') refusals.push((m as { message: string }).message) }
    gatewayEvent.subscribe(onEvent)
    scope.defer(() => gatewayEvent.unsubscribe(onEvent))
    const socket = await connectFrom(port)
    const closed = socketClosed(socket)
    socket.write('PROXY TCP4 192.0.2.')
    const config = JSON.parse(readFileSync(gw.configFile, 'utf8')) as { listeners: Record<string, unknown>[] }
    config.listeners = [{ name: 'http', port, host: '127.0.0.1' }] // proxyProtocol off: the listener is bound anew
    writeFileSync(gw.configFile, JSON.stringify(config))
    expect((await admin(gw, 'POST', '/reload')).json).toEqual({ ok: true, version: expect.any(Number) })
    await closed
    // Proving an absence takes a wait: past the header deadline the connection would have had.
    await new Promise((r) => setTimeout(r, 2 * headersMs))
    expect(refusals).toEqual([])
  })

  it('change trustedProxies in place, and turn proxyProtocol off by binding the listener anew', async () => {
    const up = await recordingUpstream()
    scope.defer(() => up.close())
    const port = await freePort() // fixed: a reload from port 0 would bind elsewhere
    const gw = await scope.gateway(up.target, { listeners: [{ name: 'http', port, host: '127.0.0.1', proxyProtocol: { trustedProxies: ['10.9.9.9'] } }] })
    const header = v1('TCP4', '192.0.2.7', '198.51.100.2')
    const refused = await exchange(port, header + request('/before'))
    expect({ raw: refused.raw, closed: refused.closed }).toEqual({ raw: '', closed: true })

    const reload = async (listener: Record<string, unknown>): Promise<void> => {
      const config = JSON.parse(readFileSync(gw.configFile, 'utf8')) as { listeners: Record<string, unknown>[] }
      config.listeners = [{ name: 'http', port, host: '127.0.0.1', ...listener }]
      writeFileSync(gw.configFile, JSON.stringify(config))
      expect((await admin(gw, 'POST', '/reload')).json).toEqual({ ok: true, version: expect.any(Number) })
    }
    await reload({ proxyProtocol: { trustedProxies: ['127.0.0.0/8'] } })
    const served = await exchange(port, header + request('/trusted'))
    expect(finalResponse(served.raw).status).toBe(200)
    expect(up.requests.at(-1)?.get('x-forwarded-for')).toBe('192.0.2.7')

    await reload({})
    const plain = await exchange(port, request('/plain'))
    expect(finalResponse(plain.raw).status).toBe(200)
    expect(up.requests.map((r) => r.target)).toEqual(['/trusted', '/plain'])
  })
})
