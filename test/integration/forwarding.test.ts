import { afterEach, describe, expect, it } from 'vitest'
import { httpUpstream, rawExchange, type TestServer } from '../helpers/upstream.js'
import { startGateway, type TestGateway } from '../helpers/gateway.js'
import type http from 'node:http'

let gw: TestGateway | null = null
let up: TestServer<http.Server> | null = null
afterEach(async () => {
  await gw?.close()
  await up?.close()
  gw = null
  up = null
})

async function proxyTo(handler: http.RequestListener, extra: Record<string, unknown> = {}): Promise<number> {
  up = await httpUpstream(handler)
  gw = await startGateway({ upstreams: { up: { targets: [up.target] } }, routes: [{ id: 'all', pathPrefix: '/', upstream: 'up' }], ...extra })
  return gw.port()
}

describe('forwarding', () => {
  it('forwards a GET with path, query and the header case the client sent', async () => {
    const port = await proxyTo((req, res) => res.end(JSON.stringify({ url: req.url, raw: req.rawHeaders })))
    const res = await fetch(`http://127.0.0.1:${port}/a/b?c=1`)
    const body = await res.json() as { url: string; raw: string[] }
    expect(res.status).toBe(200)
    expect(body.url).toBe('/a/b?c=1')
    const out = await rawExchange(port, 'GET /x HTTP/1.1\r\nHost: h\r\nX-CSRF-Token: t\r\nConnection: close\r\n\r\n')
    expect(out).toContain('"X-CSRF-Token","t"')
  })
})
