// A client that reads a large response slowly (gateway memory stays bounded, backpressure
// reaches the upstream) and half-closed connections on either side. Each scenario passes the
// survival check too (process alive, healthy route served throughout, nothing left open).

import { once } from 'node:events'
import net from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { waitFor } from '../helpers/fake-registry.js'
import { faultScene, rawConversation, type FaultScene } from '../helpers/fault-scene.js'
import { httpUpstream } from '../helpers/upstream.js'

const MB = 1024 * 1024

const cleanups: (() => Promise<unknown> | void)[] = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

async function scene(target: string): Promise<FaultScene> {
  const s = await faultScene([target])
  cleanups.push(() => s.close())
  return s
}

describe('a slow reader of a large response', () => {
  it('keeps gateway memory bounded and pushes backpressure to the upstream', async () => {
    const total = 64 * MB
    const writer = { sent: 0, refused: 0, done: false }
    const up = await httpUpstream((_req, res) => {
      const chunk = Buffer.alloc(64 * 1024, 'x')
      res.writeHead(200, { 'content-length': String(total) })
      const pump = (): void => {
        while (writer.sent < total && !res.destroyed) {
          writer.sent += chunk.length
          if (!res.write(chunk)) {
            writer.refused++
            res.once('drain', pump)
            return
          }
        }
        if (writer.sent >= total) {
          writer.done = true
          res.end()
        }
      }
      pump()
    })
    cleanups.push(() => up.close())
    const s = await scene(up.target)

    // A client that only counts what it reads, and starts out not reading at all.
    const client = net.connect({ port: s.port, host: '127.0.0.1' })
    cleanups.push(() => { client.destroy() })
    client.on('error', () => {})
    await once(client, 'connect')
    let received = 0
    let headBytes = -1
    client.on('data', (d: Buffer) => {
      if (headBytes === -1) headBytes = d.indexOf('\r\n\r\n') + 4
      received += d.length
    })
    client.pause()
    const before = process.memoryUsage()
    let peak = { rss: 0, arrayBuffers: 0 }
    const sample = setInterval(() => {
      const m = process.memoryUsage()
      peak = { rss: Math.max(peak.rss, m.rss), arrayBuffers: Math.max(peak.arrayBuffers, m.arrayBuffers) }
    }, 20)
    cleanups.push(() => clearInterval(sample))
    client.write('GET /big HTTP/1.1\r\nHost: app\r\n\r\n')

    // Slow phase: about one read every 100 ms for 1.5 s.
    for (let i = 0; i < 15; i++) {
      await new Promise((r) => setTimeout(r, 100))
      client.resume()
      await once(client, 'data')
      client.pause()
    }
    clearInterval(sample)
    expect(writer.refused, 'res.write() never returned false: no backpressure reached the upstream').toBeGreaterThan(0)
    expect(writer.done).toBe(false)
    // What the upstream wrote and the client has not read sits in socket buffers (the
    // kernel's and node's), not in a gateway-side queue of the whole body.
    expect(writer.sent - received).toBeLessThan(32 * MB)
    expect(peak.rss - before.rss).toBeLessThan(32 * MB)
    expect(peak.arrayBuffers - before.arrayBuffers).toBeLessThan(32 * MB)

    // Then read at full speed: every byte arrives.
    client.resume()
    await waitFor(() => headBytes > 0 && received - headBytes >= total, 10_000, 'the whole body')
    expect(received - headBytes).toBe(total)
    client.destroy()
    await s.check.finish()
  })
})

describe('half-closed connections', () => {
  it('answers a client that sent its request and then half-closed (GET)', async () => {
    const body = Buffer.alloc(MB, 'g')
    const up = await httpUpstream((_req, res) => setTimeout(() => res.end(body), 200))
    cleanups.push(() => up.close())
    const s = await scene(up.target)
    const client = await rawConversation(s.port, 'GET /file HTTP/1.1\r\nHost: app\r\n\r\n')
    client.socket.end()
    const out = await client.closed()
    expect(out.error).toBeNull()
    expect(out.ended).toBe(true)
    const text = out.bytes.toString('latin1')
    expect(text).toMatch(/^HTTP\/1\.1 200 /)
    expect(out.bytes.length - (text.indexOf('\r\n\r\n') + 4)).toBe(body.length)
    await s.check.finish()
  })

  it('answers a client that sent a whole POST body and then half-closed', async () => {
    const up = await httpUpstream((req, res) => {
      let n = 0
      req.on('data', (d: Buffer) => (n += d.length))
      req.on('end', () => setTimeout(() => res.end(`got ${n}`), 100))
    })
    cleanups.push(() => up.close())
    const s = await scene(up.target)
    const client = await rawConversation(s.port, `POST /upload HTTP/1.1\r\nHost: app\r\nContent-Length: 300000\r\n\r\n${'p'.repeat(300000)}`)
    client.socket.end()
    const out = await client.closed()
    expect(out.error).toBeNull()
    expect(out.bytes.toString('latin1')).toMatch(/^HTTP\/1\.1 200 .*\r\n\r\ngot 300000$/s)
    await s.check.finish()
  })

  it('relays a close-delimited response whose upstream half-closes after it, then closes the upstream side', async () => {
    const body = 'c'.repeat(200_000)
    const upstreamSaw = { end: 0 }
    const server = net.createServer({ allowHalfOpen: true }, (socket) => {
      socket.on('error', () => {})
      socket.once('data', () => {
        socket.write(`HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n${body}`)
        socket.end() // FIN; this side still reads
      })
      socket.on('end', () => {
        upstreamSaw.end++
        socket.destroy()
      })
    })
    server.listen(0, '127.0.0.1')
    await once(server, 'listening')
    cleanups.push(() => new Promise((r) => server.close(r)))
    const s = await scene(`127.0.0.1:${(server.address() as net.AddressInfo).port}`)
    const client = await rawConversation(s.port, 'GET /stream HTTP/1.1\r\nHost: app\r\n\r\n')
    cleanups.push(() => { client.socket.destroy() })
    const out = await client.closed(3000)
    // The upstream's FIN ends the body; the client gets all of it and a clean close.
    expect(out.error).toBeNull()
    expect(out.ended).toBe(true)
    const text = out.bytes.toString('latin1')
    expect(text.slice(text.indexOf('\r\n\r\n') + 4)).toBe(body)
    await waitFor(() => upstreamSaw.end === 1, 2000, 'the gateway to close its upstream side')
    await s.check.finish()
  })
})
