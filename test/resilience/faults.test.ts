// Upstreams that misbehave: refuse, reset before or after the response head, hang, stall,
// answer garbage, close a keep-alive connection as it is reused, or have no address at all.
// Each scenario also proves the process survives, the healthy route keeps answering during
// the fault, and no socket or gateway state is left behind (test/helpers/survival-check.ts).
// Parser strictness and the plain 502/504 answers live in test/integration/.

import { once } from 'node:events'
import net from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { waitFor } from '../helpers/fake-registry.js'
import { faultScene, httpGet, rawConversation, request, type FaultScene } from '../helpers/fault-scene.js'
import { rawUpstream, type TestServer, freePort } from '../helpers/upstream.js'

type RawServer = TestServer<net.Server> & { sockets: Set<net.Socket> }

const cleanups: (() => Promise<unknown> | void)[] = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

async function scene(faulty: string[], extra: Record<string, unknown> = {}, upstream: Record<string, unknown> = {}): Promise<FaultScene> {
  const s = await faultScene(faulty, extra, upstream)
  cleanups.push(() => s.close())
  return s
}

async function raw(onRequest: (socket: net.Socket, data: Buffer) => void): Promise<RawServer> {
  const up = await rawUpstream(onRequest)
  cleanups.push(() => up.close())
  return up
}

const GET = (path = '/x') => `GET ${path} HTTP/1.1\r\nHost: app\r\n\r\n`
const headOf = (b: Buffer) => b.toString('latin1', 0, Math.max(0, b.indexOf('\r\n\r\n')))

describe('an upstream that fails before answering', () => {
  it('answers 502 upstream_unreachable while the upstream refuses, then 503 no_healthy_upstream once it is out', async () => {
    const s = await scene([`127.0.0.1:${await freePort()}`], {}, { maxFails: 3, cooldownMs: 60_000 })
    const answers: string[] = []
    for (let i = 0; i < 5; i++) {
      const r = await request(s.port, '/app')
      answers.push(`${r.status} ${r.code}`)
    }
    expect(answers).toEqual([...Array(3).fill('502 upstream_unreachable'), ...Array(2).fill('503 no_healthy_upstream')])
    await s.check.finish()
  })

  it.each(['reset', 'FIN'])('answers 502 upstream_reset when the upstream sends a %s before the response head', async (how) => {
    const up = await raw((socket) => (how === 'reset' ? socket.resetAndDestroy() : socket.end()))
    const s = await scene([up.target])
    for (let i = 0; i < 3; i++) {
      const r = await request(s.port, '/app')
      expect(r.status).toBe(502)
      expect(r.code).toBe('upstream_reset')
    }
    await s.check.finish()
  })

  it('answers 502 upstream_unreachable quickly for a target whose name does not resolve', async () => {
    const s = await scene(['no-such-host.invalid:80'])
    const t0 = performance.now()
    const r = await request(s.port, '/app')
    expect(r.status).toBe(502)
    expect(r.code).toBe('upstream_unreachable')
    expect(performance.now() - t0).toBeLessThan(3000)
    await s.check.finish()
  })
})

describe('an upstream that fails after the response head', () => {
  /** Sends `head` and `body`, then waits for the test to pull the trigger. */
  async function breaksAfterHead(head: string, body: string) {
    let victim: net.Socket | null = null
    const up = await raw((socket) => {
      victim = socket
      socket.write(head + body)
    })
    const s = await scene([up.target])
    const client = await rawConversation(s.port, GET())
    await client.until((b) => b.includes('\r\n\r\n') && b.length > b.indexOf('\r\n\r\n') + 4)
    await waitFor(() => victim !== null)
    return { up, s, client, victim: victim! }
  }

  it('resets the client when the upstream resets mid-body (Content-Length): the short body never looks complete', async () => {
    const { s, client, victim } = await breaksAfterHead('HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n', 'x'.repeat(1000))
    victim.resetAndDestroy()
    const out = await client.closed()
    expect(headOf(out.bytes)).toMatch(/^HTTP\/1\.1 200/)
    expect(out.bytes.length - out.bytes.indexOf('\r\n\r\n') - 4).toBeLessThan(100000)
    expect(out.error).toBe('ECONNRESET')
    await s.check.finish()
  })

  it('resets the client when the upstream closes (FIN) short of its Content-Length', async () => {
    const { s, client, victim } = await breaksAfterHead('HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n', 'x'.repeat(1000))
    victim.end()
    const out = await client.closed()
    expect(out.error).toBe('ECONNRESET')
    expect(out.ended).toBe(false)
    await s.check.finish()
  })

  it('resets the client when the upstream resets a chunked body: no last chunk is ever sent', async () => {
    const { s, client, victim } = await breaksAfterHead('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n', `3e8\r\n${'x'.repeat(1000)}\r\n`)
    victim.resetAndDestroy()
    const out = await client.closed()
    expect(out.bytes.toString('latin1')).not.toContain('\r\n0\r\n\r\n')
    expect(out.error).toBe('ECONNRESET')
    await s.check.finish()
  })

  it('resets the client when the upstream resets a body that runs until close', async () => {
    const { s, client, victim } = await breaksAfterHead('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n', 'x'.repeat(1000))
    victim.resetAndDestroy()
    const out = await client.closed()
    // A clean FIN would pass the truncated body off as the whole of it.
    expect(out.error).toBe('ECONNRESET')
    expect(out.ended).toBe(false)
    await s.check.finish()
  })

  it.each([
    ['Content-Length', 'HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n', 'x'.repeat(1000)],
    ['chunked', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n', `3e8\r\n${'x'.repeat(1000)}\r\n`],
  ])('a node:http client sees the %s response aborted, never ended', async (_kind, head, body) => {
    let victim: net.Socket | null = null
    const up = await raw((socket) => {
      victim = socket
      socket.write(head + body, () => setTimeout(() => socket.resetAndDestroy(), 50))
    })
    const s = await scene([up.target])
    const r = await httpGet(s.port, '/app')
    expect(victim).not.toBeNull()
    expect(r, JSON.stringify(r)).toMatchObject({ status: 200 })
    expect(r.how).not.toBe('end')
    expect(r.bytes).toBeLessThan(100000)
    await s.check.finish()
  })

  it('resets the client on a malformed chunk after the head was relayed', async () => {
    const { up, s, client, victim } = await breaksAfterHead('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n', '5\r\nhello\r\n')
    victim.write('ZZ\r\n')
    const out = await client.closed()
    expect(headOf(out.bytes)).toMatch(/^HTTP\/1\.1 200/)
    expect(out.bytes.toString('latin1')).not.toContain('\r\n0\r\n\r\n')
    expect(out.error).toBe('ECONNRESET')
    await waitFor(() => up.sockets.size === 0, 2000, 'the upstream socket closed')
    await s.check.finish()
  })

  // The head is held back to go out with the first body bytes (one write); when those bytes
  // are already malformed nothing has reached the client, so it can still be told why.
  it('answers 502 upstream_bad_response when the body bytes that came with the head are malformed', async () => {
    const up = await raw((socket) => socket.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZ\r\n'))
    const s = await scene([up.target])
    const client = await rawConversation(s.port, GET())
    const out = await client.closed()
    expect(headOf(out.bytes), `got ${out.bytes.length} bytes, then ${out.error ?? 'a FIN'}`).toMatch(/^HTTP\/1\.1 502 .*\r\nx-gateway-error: upstream_bad_response/s)
    await waitFor(() => up.sockets.size === 0, 2000, 'the upstream socket closed')
    await s.check.finish()
  })
})

describe('an upstream that hangs', () => {
  it('answers 504 upstream_timeout after responseMs and closes the upstream socket', async () => {
    const up = await raw(() => {})
    const s = await scene([up.target], { timeouts: { responseMs: 400 } })
    const t0 = performance.now()
    const r = await request(s.port, '/app')
    expect(r.status).toBe(504)
    expect(r.code).toBe('upstream_timeout')
    expect(performance.now() - t0).toBeLessThan(2000)
    await waitFor(() => up.sockets.size === 0, 2000, 'the upstream socket closed')
    await s.check.finish()
  })

  // HAProxy's "timeout server" and nginx's proxy_read_timeout bound the silence between two
  // reads of a response body, not only the wait for its head; without such a bound, an
  // upstream that stalls mid-body holds the client and the upstream socket forever.
  it('cuts off a response whose upstream stalls mid-body (no bytes for longer than responseMs)', async () => {
    const up = await raw((socket) => socket.write(`HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n${'x'.repeat(1000)}`))
    const s = await scene([up.target], { timeouts: { responseMs: 400 } })
    const client = await rawConversation(s.port, GET())
    cleanups.push(() => { client.socket.destroy() })
    await client.until((b) => b.includes('xxxx'))
    const out = await client.closed(3000)
    expect(out.ended).toBe(false) // an abort, never a clean end of a short body
    await waitFor(() => up.sockets.size === 0, 2000, 'the upstream socket closed')
    await s.check.finish()
  })
})

describe('an upstream that answers garbage', () => {
  it.each([
    ['not HTTP at all', 'SSH-2.0-OpenSSH_9.6\r\n\r\n'],
    ['a status line without a status', 'HTTP/1.1 OK\r\nContent-Length: 0\r\n\r\n'],
    ['conflicting Content-Length', 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello'],
    ['Content-Length with chunked', 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n'],
    ['a head over 64 KiB', `HTTP/1.1 200 OK\r\nX-Big: ${'a'.repeat(70000)}\r\n\r\n`],
    ['a 101 nobody asked for', 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n'],
  ])('answers 502 upstream_bad_response to %s and closes the upstream socket', async (_what, response) => {
    const up = await raw((socket) => socket.write(response))
    const s = await scene([up.target])
    for (let i = 0; i < 2; i++) {
      const r = await request(s.port, '/app')
      expect(r.status).toBe(502)
      expect(r.code).toBe('upstream_bad_response')
    }
    await waitFor(() => up.sockets.size === 0, 2000, 'the upstream sockets closed')
    await s.check.finish()
  })
})

describe('an upstream that closes keep-alive connections', () => {
  it.each(['FIN', 'reset'])('retries a GET once when a pooled connection is closed (%s) just as it is reused', async (how) => {
    const served = new WeakMap<net.Socket, number>()
    const up = await raw((socket) => {
      const n = (served.get(socket) ?? 0) + 1
      served.set(socket, n)
      // The second request on a connection meets a server that already decided to close it.
      if (n === 1) socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok')
      else if (how === 'FIN') socket.end()
      else socket.resetAndDestroy()
    })
    const s = await scene([up.target], { timeouts: { upstreamIdleMs: 1000 } })
    for (let i = 0; i < 6; i++) {
      const r = await request(s.port, `/app/${i}`)
      expect(r.status).toBe(200)
      expect(r.text).toBe('ok')
    }
    // Every request after the first met a stale connection and went out again on a new one.
    expect(up.connections).toBe(6)
    s.gw.gw.targets.peek(up.target)!.closeIdle()
    await s.check.finish()
  })

  it('serves every GET when the upstream closes each connection right after its response', async () => {
    const up = await raw((socket) => socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok', () => setImmediate(() => socket.destroy())))
    const s = await scene([up.target])
    for (let i = 0; i < 30; i++) {
      const r = await request(s.port, `/app/${i}`)
      expect(r.status).toBe(200)
      expect(r.text).toBe('ok')
    }
    await s.check.finish()
  })
})
