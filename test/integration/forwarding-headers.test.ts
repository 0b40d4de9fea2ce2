// Header rewriting (issue 2, item 5; contract "Upstream requests carry ..."): hop-by-hop
// fields go in both directions, the X-Forwarded-* set is the gateway's own, X-Request-Id is
// kept or made, Host is kept, and field names keep the case each side sent.

import { describe, expect, it } from 'vitest'
import { finalResponse } from '../helpers/http-bytes.js'
import { okResponder, recordingUpstream, type RecordingUpstream, type Responder, type UpstreamRequest } from '../helpers/recording-upstream.js'
import { exchange, useTestScope } from '../helpers/test-scope.js'

const scope = useTestScope()

async function setup(respond: Responder = okResponder): Promise<{ port: number; up: RecordingUpstream }> {
  const up = await recordingUpstream(respond)
  scope.defer(() => up.close())
  const gw = await scope.gateway(up.target)
  return { port: gw.port(), up }
}

/** Sends one request (a raw head plus optional body) and returns what the upstream received. */
async function forwarded(port: number, up: RecordingUpstream, head: string, body = ''): Promise<{ req: UpstreamRequest; raw: string }> {
  const before = up.requests.length
  const ex = await exchange(port, `${head}\r\n${body}`)
  expect(finalResponse(ex.raw).status).toBe(200)
  expect(up.requests.length).toBe(before + 1)
  return { req: up.requests[before], raw: ex.raw }
}

function names(req: UpstreamRequest): string[] {
  return req.headers.map(([n]) => n.toLowerCase())
}

describe('hop-by-hop fields', () => {
  it('removes hop-by-hop request fields and every field named in Connection', async () => {
    const { port, up } = await setup()
    const { req } = await forwarded(port, up,
      'GET /a HTTP/1.1\r\nHost: h\r\nConnection: close, X-Secret, x-other-secret\r\nKeep-Alive: timeout=5\r\n' +
      'Proxy-Connection: keep-alive\r\nTE: trailers\r\nUpgrade: h2c\r\nX-Secret: s1\r\nX-Other-Secret: s2\r\nProxy-Authorization: Basic eDp5\r\nX-Kept: yes\r\n')
    const sent = names(req)
    for (const hop of ['keep-alive', 'proxy-connection', 'te', 'upgrade', 'x-secret', 'x-other-secret', 'proxy-authorization']) {
      expect(sent, `upstream got ${hop}`).not.toContain(hop)
    }
    for (const v of req.all('connection')) expect(v.toLowerCase()).not.toMatch(/secret|upgrade/)
    expect(req.get('x-kept')).toBe('yes')
  })

  it('removes a field named in a second Connection line too', async () => {
    const { port, up } = await setup()
    const { req } = await forwarded(port, up, 'GET /a HTTP/1.1\r\nHost: h\r\nConnection: close\r\nConnection: X-Late\r\nX-Late: s\r\n')
    expect(names(req)).not.toContain('x-late')
  })

  it('removes hop-by-hop response fields and every field the upstream named in Connection', async () => {
    const { port } = await setup((_req, socket) => {
      socket.write('HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Resp-Secret\r\nKeep-Alive: timeout=5, max=100\r\n' +
        'Proxy-Connection: keep-alive\r\nUpgrade: h2c\r\nTE: trailers\r\nX-Resp-Secret: s\r\nX-Kept: yes\r\nContent-Length: 2\r\n\r\nok')
    })
    const ex = await exchange(port, 'GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n')
    const res = finalResponse(ex.raw)
    const got = res.headers.map(([n]) => n.toLowerCase())
    for (const hop of ['keep-alive', 'proxy-connection', 'upgrade', 'te', 'x-resp-secret']) expect(got, `client got ${hop}`).not.toContain(hop)
    for (const v of res.all('connection')) expect(v.toLowerCase()).toBe('close')
    expect(res.get('x-kept')).toBe('yes')
    expect(res.body).toBe('ok')
  })

  it('keeps Content-Length when a client names it in Connection', async () => {
    const { port, up } = await setup()
    const { req } = await forwarded(port, up, 'POST /a HTTP/1.1\r\nHost: h\r\nConnection: content-length, close\r\nContent-Length: 5\r\n', 'hello')
    expect(req.all('content-length')).toEqual(['5'])
    expect(req.body.toString()).toBe('hello')
  })

  it('keeps Transfer-Encoding and Host when a client names them in Connection', async () => {
    const { port, up } = await setup()
    const { req } = await forwarded(port, up, 'POST /a HTTP/1.1\r\nHost: h\r\nConnection: transfer-encoding, host, close\r\nTransfer-Encoding: chunked\r\n', '5\r\nhello\r\n0\r\n\r\n')
    expect(req.all('transfer-encoding')).toEqual(['chunked'])
    expect(req.all('host')).toEqual(['h'])
    expect(req.body.toString()).toBe('5\r\nhello\r\n0\r\n\r\n')
  })

  it('keeps Content-Length when an upstream names it in Connection', async () => {
    const { port } = await setup((_req, socket) => {
      socket.write('HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 2\r\n\r\nok')
    })
    const ex = await exchange(port, 'GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n')
    const res = finalResponse(ex.raw)
    expect(res.get('content-length')).toBe('2')
    expect(res.body).toBe('ok')
  })
})

describe('X-Forwarded-* and X-Request-Id', () => {
  it('appends the client address to an X-Forwarded-For the client sent', async () => {
    const { port, up } = await setup()
    const { req } = await forwarded(port, up, 'GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 203.0.113.9\r\nConnection: close\r\n')
    expect(req.all('x-forwarded-for')).toEqual(['203.0.113.9, 127.0.0.1'])
  })

  it('merges two X-Forwarded-For lines in order and appends the client address', async () => {
    const { port, up } = await setup()
    const { req } = await forwarded(port, up, 'GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 203.0.113.9\r\nX-Forwarded-For: 198.51.100.2\r\nConnection: close\r\n')
    expect(req.all('x-forwarded-for')).toEqual(['203.0.113.9, 198.51.100.2, 127.0.0.1'])
  })

  it('sets X-Forwarded-For to the client address when none was sent', async () => {
    const { port, up } = await setup()
    const { req } = await forwarded(port, up, 'GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n')
    expect(req.all('x-forwarded-for')).toEqual(['127.0.0.1'])
  })

  it('always says X-Forwarded-Proto: http on the HTTP listener, whatever the client claims', async () => {
    const { port, up } = await setup()
    const { req } = await forwarded(port, up, 'GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-Proto: https\r\nx-forwarded-proto: wss\r\nConnection: close\r\n')
    expect(req.all('x-forwarded-proto')).toEqual(['http'])
  })

  it('sets X-Forwarded-Host to the Host the client sent and X-Forwarded-Port to the listener port, replacing client values', async () => {
    const { port, up } = await setup()
    const { req } = await forwarded(port, up, 'GET / HTTP/1.1\r\nHost: ide.example.com:8443\r\nX-Forwarded-Host: evil.example.com\r\nX-Forwarded-Port: 1\r\nConnection: close\r\n')
    expect(req.all('x-forwarded-host')).toEqual(['ide.example.com:8443'])
    expect(req.all('x-forwarded-port')).toEqual([String(port)])
  })

  it('keeps an X-Request-Id the client sent', async () => {
    const { port, up } = await setup()
    const { req } = await forwarded(port, up, 'GET / HTTP/1.1\r\nHost: h\r\nX-Request-Id: client-id-42\r\nConnection: close\r\n')
    expect(req.all('x-request-id')).toEqual(['client-id-42'])
  })

  it('makes a unique X-Request-Id when the client sent none', async () => {
    const { port, up } = await setup()
    const ids: string[] = []
    for (let i = 0; i < 5; i++) {
      const { req } = await forwarded(port, up, 'GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n')
      const all = req.all('x-request-id')
      expect(all).toHaveLength(1)
      expect(all[0].length).toBeGreaterThan(0)
      ids.push(all[0])
    }
    expect(new Set(ids).size).toBe(5)
  })
})

describe('Host and field-name case', () => {
  it('keeps Host exactly as the client sent it', async () => {
    const { port, up } = await setup()
    const { req } = await forwarded(port, up, 'GET / HTTP/1.1\r\nHost: IDE.Example.com:8080\r\nConnection: close\r\n')
    expect(req.headers.filter(([n]) => n.toLowerCase() === 'host')).toEqual([['Host', 'IDE.Example.com:8080']])
  })

  it('keeps the case of request field names (X-CSRF-Token reaches the upstream as sent)', async () => {
    const { port, up } = await setup()
    const { req } = await forwarded(port, up, 'GET / HTTP/1.1\r\nhost: h\r\nX-CSRF-Token: abc\r\nx-lower: 1\r\nX-MiXeD-CaSe: 2\r\nConnection: close\r\n')
    expect(req.head).toContain('\r\nX-CSRF-Token: abc\r\n')
    expect(req.head).toContain('\r\nx-lower: 1\r\n')
    expect(req.head).toContain('\r\nX-MiXeD-CaSe: 2\r\n')
    expect(req.head).toContain('\r\nhost: h\r\n')
  })

  it('keeps the case of response field names (the client sees X-Custom-CASE as the upstream sent it)', async () => {
    const { port } = await setup((_req, socket) => {
      socket.write('HTTP/1.1 200 OK\r\nX-Custom-CASE: v\r\nset-cookie: a=1\r\nContent-Length: 2\r\n\r\nok')
    })
    const ex = await exchange(port, 'GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n')
    expect(ex.raw).toContain('\r\nX-Custom-CASE: v\r\n')
    expect(ex.raw).toContain('\r\nset-cookie: a=1\r\n')
  })

  it('keeps repeated response fields (Set-Cookie) separate and in order', async () => {
    const { port } = await setup((_req, socket) => {
      socket.write('HTTP/1.1 200 OK\r\nSet-Cookie: a=1; Path=/\r\nSet-Cookie: b=2, c=3\r\nContent-Length: 2\r\n\r\nok')
    })
    const ex = await exchange(port, 'GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n')
    expect(finalResponse(ex.raw).all('set-cookie')).toEqual(['a=1; Path=/', 'b=2, c=3'])
  })
})
