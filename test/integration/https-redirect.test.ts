// A plain-HTTP listener with `redirectToHttps` sends every request to the same host and target
// on HTTPS, but for static routes with `allowHttp` (the agent binaries stay plain HTTP).

import { readFileSync, writeFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import { admin } from '../admin/admin-client.js'
import { FakeRegistry } from '../helpers/fake-registry.js'
import { finalResponse } from '../helpers/http-bytes.js'
import { recordingUpstream } from '../helpers/recording-upstream.js'
import { exchange, socketClosed, useTestScope } from '../helpers/test-scope.js'
import { freePort } from '../helpers/upstream.js'

const scope = useTestScope()

/** A gateway whose "http" listener redirects, with a catch-all route and an `allowHttp` one. */
async function redirecting(redirect: Record<string, unknown> = {}, extra: Record<string, unknown> = {}) {
  const up = await recordingUpstream()
  scope.defer(() => up.close())
  const gw = await scope.gateway(up.target, {
    listeners: [{ name: 'http', port: 0, host: '127.0.0.1', redirectToHttps: redirect }],
    routes: [
      { id: 'agent-binaries', pathPrefix: '/agent-binaries', upstream: 'up', allowHttp: true },
      { id: 'master', pathPrefix: '/', upstream: 'up' },
    ],
    ...extra,
  })
  return { up, gw, port: gw.port() }
}

describe('redirectToHttps', () => {
  it('answers 302 to the same host and target on HTTPS, closes, and forwards nothing', async () => {
    const { up, port } = await redirecting()
    const ex = await exchange(port, 'GET /dashboard/?a=1&b=%2F HTTP/1.1\r\nHost: IDE.example.com:80\r\n\r\n')
    const res = finalResponse(ex.raw)
    expect(res.status).toBe(302)
    expect(res.get('location')).toBe('https://ide.example.com/dashboard/?a=1&b=%2F')
    expect(res.get('content-length')).toBe('0')
    expect(res.get('connection')).toBe('close')
    expect(res.get('x-gateway-error')).toBeUndefined()
    expect(ex.closed).toBe(true)
    expect(up.requests).toHaveLength(0)
  })

  it('names a port other than 443, and keeps an IPv6 literal in brackets', async () => {
    const { port } = await redirecting({ port: 8443 })
    const v4 = finalResponse((await exchange(port, 'GET /x HTTP/1.1\r\nHost: ide.example.com\r\n\r\n')).raw)
    expect(v4.get('location')).toBe('https://ide.example.com:8443/x')
    const v6 = finalResponse((await exchange(port, 'GET /x HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n')).raw)
    expect(v6.get('location')).toBe('https://[::1]:8443/x')
  })

  it('keeps the method with 307/308 for anything but GET and HEAD, and reads no body', async () => {
    const temporary = await redirecting()
    const head = finalResponse((await exchange(temporary.port, 'HEAD /x HTTP/1.1\r\nHost: h\r\n\r\n')).raw, true)
    expect(head.status).toBe(302)
    const post = await exchange(temporary.port, 'POST /api/x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello')
    expect(finalResponse(post.raw).status).toBe(307)
    expect(finalResponse(post.raw).get('location')).toBe('https://h/api/x')
    expect(temporary.up.requests).toHaveLength(0)

    const permanent = await redirecting({ permanent: true })
    expect(finalResponse((await exchange(permanent.port, 'GET /x HTTP/1.1\r\nHost: h\r\n\r\n')).raw).status).toBe(301)
    expect(finalResponse((await exchange(permanent.port, 'PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n')).raw).status).toBe(308)
  })

  it('a client still sending its body gets the redirect and a clean close', async () => {
    const { up, port } = await redirecting()
    const socket = await scope.connect(port)
    const chunks: Buffer[] = []
    socket.on('data', (d: Buffer) => chunks.push(d))
    const closed = socketClosed(socket)
    socket.write('POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 1000000\r\n\r\n')
    socket.write(Buffer.alloc(64 * 1024, 0x61))
    const end = await closed
    const res = finalResponse(Buffer.concat(chunks).toString('latin1'))
    expect(res.status).toBe(307)
    expect(end.error).toBeNull()
    expect(up.requests).toHaveLength(0)
  })

  it('serves routes with allowHttp as they are, on a segment boundary only', async () => {
    const { up, port } = await redirecting()
    const served = finalResponse((await exchange(port, 'GET /agent-binaries/linux/exec-agent HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n')).raw)
    expect(served.status).toBe(200)
    expect(served.body).toBe('/agent-binaries/linux/exec-agent')
    const other = finalResponse((await exchange(port, 'GET /agent-binariesX HTTP/1.1\r\nHost: h\r\n\r\n')).raw)
    expect(other.status).toBe(302)
    expect(up.requests.map((r) => r.target)).toEqual(['/agent-binaries/linux/exec-agent'])
  })

  it('takes allowHttp on routes added through the admin API', async () => {
    const { gw, up, port } = await redirecting()
    const put = await admin(gw, 'PUT', '/routes', { body: { routes: [{ id: 'acme', pathPrefix: '/.well-known/acme-challenge', upstream: 'up', allowHttp: true }] } })
    expect(put.status).toBe(200)
    expect((await admin(gw, 'GET', '/routes')).json.routes).toContainEqual(expect.objectContaining({ id: 'acme', allowHttp: true }))
    const res = finalResponse((await exchange(port, 'GET /.well-known/acme-challenge/t0k3n HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n')).raw)
    expect(res.status).toBe(200)
    expect(up.requests.map((r) => r.target)).toEqual(['/.well-known/acme-challenge/t0k3n'])
  })

  it('redirects workspace requests without asking the registry', async () => {
    const fake = await FakeRegistry.start()
    scope.defer(() => fake.close())
    fake.setSilently({ key: '32770_node1', target: '127.0.0.1:1' })
    fake.setSilently({ key: 'term-w1.ws.example.com', target: '127.0.0.1:1' })
    const { port } = await redirecting({}, { workspaces: { hostSuffix: '.ws.example.com', registry: { url: fake.url } } })
    const byPath = finalResponse((await exchange(port, 'GET /32770_node1/api/project?token=t HTTP/1.1\r\nHost: ide.example.com\r\n\r\n')).raw)
    expect(byPath.get('location')).toBe('https://ide.example.com/32770_node1/api/project?token=t')
    const byHost = finalResponse((await exchange(port, 'GET /pty HTTP/1.1\r\nHost: term-w1.ws.example.com\r\n\r\n')).raw)
    expect(byHost.get('location')).toBe('https://term-w1.ws.example.com/pty')
    expect(fake.lookupCount('32770_node1')).toBe(0)
    expect(fake.lookupCount('term-w1.ws.example.com')).toBe(0)
  })

  it('on a workspaces-only listener, redirects even routes with allowHttp', async () => {
    const up = await recordingUpstream()
    scope.defer(() => up.close())
    const gw = await scope.gateway(up.target, {
      listeners: [{ name: 'http', port: 0, host: '127.0.0.1', workspacesOnly: true, redirectToHttps: {} }],
      routes: [{ id: 'agent-binaries', pathPrefix: '/agent-binaries', upstream: 'up', allowHttp: true }],
    })
    const res = finalResponse((await exchange(gw.port(), 'GET /agent-binaries/x HTTP/1.1\r\nHost: h\r\n\r\n')).raw)
    expect(res.status).toBe(302)
  })

  it('answers 400 when no HTTPS address can be made (no Host, the target "*")', async () => {
    const { up, port } = await redirecting()
    const noHost = finalResponse((await exchange(port, 'GET /x HTTP/1.0\r\n\r\n')).raw)
    expect(noHost.status).toBe(400)
    expect(noHost.get('x-gateway-error')).toBe('bad_request')
    expect(noHost.body).toContain('no Host')
    const star = finalResponse((await exchange(port, 'OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n')).raw)
    expect(star.status).toBe(400)
    expect(star.body).toContain('"*"')
    expect(up.requests).toHaveLength(0)
  })

  it('is switched on by a reload, for the next request on a connection already open', async () => {
    const up = await recordingUpstream()
    scope.defer(() => up.close())
    const port = await freePort() // a fixed port: a reload from port 0 would bind a new socket
    const gw = await scope.gateway(up.target, { listeners: [{ name: 'http', port, host: '127.0.0.1' }] })
    const client = scope.client(port)
    client.socket.write('GET /one HTTP/1.1\r\nHost: h\r\n\r\n')
    await client.waitFor('/one')
    const config = JSON.parse(readFileSync(gw.configFile, 'utf8')) as { listeners: Record<string, unknown>[] }
    config.listeners[0].redirectToHttps = { port: 8443 }
    writeFileSync(gw.configFile, JSON.stringify(config))
    const reload = await admin(gw, 'POST', '/reload')
    expect(reload.json).toEqual({ ok: true, version: expect.any(Number) })
    client.socket.write('GET /two HTTP/1.1\r\nHost: h\r\n\r\n')
    expect(await client.waitFor('https://h:8443/two')).toContain('HTTP/1.1 302 Found')
    expect(up.requests.map((r) => r.target)).toEqual(['/one'])
  })
})
