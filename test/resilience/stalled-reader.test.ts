// A client that stops reading a response holds an upstream connection and buffers; after
// timeouts.clientReadMs without progress both are released.

import { once } from 'node:events'
import net from 'node:net'
import { afterEach, expect, it } from 'vitest'
import { waitFor } from '../helpers/fake-registry.js'
import { startGateway, type TestGateway } from '../helpers/gateway.js'
import { httpUpstream } from '../helpers/upstream.js'

const cleanups: (() => Promise<unknown> | void)[] = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

it('cuts off a client that stops reading a response after clientReadMs, and closes the upstream', async () => {
  let upstreamClosed = false
  const up = await httpUpstream((_req, res) => {
    const chunk = Buffer.alloc(64 * 1024, 'z')
    res.writeHead(200, { 'content-length': String(256 * 1024 * 1024) })
    const pump = (): void => {
      while (!res.destroyed && res.write(chunk)) { /* until backpressure */ }
      if (!res.destroyed) res.once('drain', pump)
    }
    pump()
    res.on('close', () => { upstreamClosed = true })
  })
  cleanups.push(() => up.close())
  const gw: TestGateway = await startGateway({
    upstreams: { up: { targets: [up.target] } },
    routes: [{ id: 'all', pathPrefix: '/', upstream: 'up' }],
    timeouts: { clientReadMs: 500 },
  })
  cleanups.push(() => gw.close())
  const client = net.connect(gw.port(), '127.0.0.1')
  cleanups.push(() => { client.destroy() })
  client.on('error', () => {})
  await once(client, 'connect')
  client.pause() // never reads
  client.write('GET /big HTTP/1.1\r\nHost: h\r\n\r\n')
  await waitFor(() => upstreamClosed, 5000, 'the upstream response to be abandoned')
  await waitFor(() => gw.gw.engine.connections.size === 0, 2000, 'the client connection to go')
  expect([...gw.gw.targets.all()].every((t) => t.active === 0)).toBe(true)
})
