import http from 'node:http'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import WebSocket, { WebSocketServer } from 'ws'
import { startGateway, type TestGateway } from '../helpers/gateway.js'
import { httpUpstream, type TestServer } from '../helpers/upstream.js'
import { admin } from './admin-client.js'

let gw: TestGateway | null = null
const closers: (() => Promise<unknown>)[] = []
afterEach(async () => {
  await gw?.close()
  gw = null
  for (const c of closers.splice(0)) await c()
})

async function upstream(name: string): Promise<TestServer<http.Server>> {
  const u = await httpUpstream((req, res) => {
    req.resume()
    req.on('end', () => res.end(name))
  })
  closers.push(() => u.close())
  return u
}

describe('route changes under traffic', () => {
  it('fails no request while 20 route replacements land under steady load', async () => {
    const blue = await upstream('blue')
    const green = await upstream('green')
    gw = await startGateway({ upstreams: { master: { targets: [blue.target] } }, routes: [{ id: 'master', pathPrefix: '/', upstream: 'master' }] })
    const g = gw
    const routesTo = (target: string, n: number) => ({
      routes: [
        { id: 'app', pathPrefix: '/app', targets: [target] },
        { id: `extra-${n}`, pathPrefix: `/extra/${n}`, targets: [target] },
      ],
    })
    expect((await admin(g, 'PUT', '/routes', { body: routesTo(blue.target, 0) })).status).toBe(200)

    let running = true
    let ok = 0
    const failures: string[] = []
    const seen = new Set<string>()
    const url = `http://127.0.0.1:${g.port()}/app/x`
    const loop = async (i: number): Promise<void> => {
      let n = 0
      while (running) {
        try {
          // a mix of bodiless requests and small uploads
          const res = n++ % 3 === 0 ? await fetch(url, { method: 'POST', body: `payload ${i}` }) : await fetch(url)
          const text = await res.text()
          if (res.status !== 200 || (text !== 'blue' && text !== 'green')) failures.push(`${res.status} ${text}`)
          else {
            ok++
            seen.add(text)
          }
        } catch (err) {
          failures.push(String((err as Error).cause ?? err))
        }
      }
    }
    const loops = Array.from({ length: 8 }, (_, i) => loop(i))
    const started = Date.now()
    for (let n = 1; n <= 20; n++) {
      const res = await admin(g, 'PUT', '/routes', { body: routesTo(n % 2 === 1 ? green.target : blue.target, n) })
      expect(res.status).toBe(200)
      await new Promise((r) => setTimeout(r, 80))
    }
    while (Date.now() - started < 2000) await new Promise((r) => setTimeout(r, 50))
    running = false
    await Promise.all(loops)
    expect(failures).toEqual([])
    expect(ok).toBeGreaterThan(100)
    expect([...seen].sort()).toEqual(['blue', 'green'])
  })

  it('keeps an open websocket tunnel working when its route is replaced and removed', async () => {
    const server = http.createServer()
    const wss = new WebSocketServer({ server })
    wss.on('connection', (ws) => ws.on('message', (data) => ws.send(`echo ${data.toString()}`)))
    server.listen(0, '127.0.0.1')
    await once(server, 'listening')
    closers.push(async () => {
      for (const c of wss.clients) c.terminate()
      wss.close()
      await new Promise((r) => server.close(r))
    })
    const target = `127.0.0.1:${(server.address() as AddressInfo).port}`
    const other = await upstream('other')
    const master = await upstream('master')
    gw = await startGateway({ upstreams: { master: { targets: [master.target] } }, routes: [{ id: 'master', pathPrefix: '/', upstream: 'master' }] })
    expect((await admin(gw, 'PUT', '/routes', { body: { routes: [{ id: 'pty', pathPrefix: '/pty', targets: [target] }] } })).status).toBe(200)

    const ws = new WebSocket(`ws://127.0.0.1:${gw.port()}/pty`)
    closers.push(async () => ws.terminate())
    await once(ws, 'open')
    const next = (): Promise<string> => once(ws, 'message').then(([d]) => String(d))
    ws.send('one')
    expect(await next()).toBe('echo one')

    expect((await admin(gw, 'PUT', '/routes', { body: { routes: [{ id: 'pty', pathPrefix: '/pty', targets: [other.target] }] } })).status).toBe(200)
    ws.send('two')
    expect(await next()).toBe('echo two')
    expect((await admin(gw, 'PUT', '/routes', { body: { routes: [] } })).status).toBe(200)
    ws.send('three')
    expect(await next()).toBe('echo three')
    expect(ws.readyState).toBe(WebSocket.OPEN)
    // new requests follow the new table
    expect(await (await fetch(`http://127.0.0.1:${gw.port()}/pty`)).text()).toBe('master')
  })
})
