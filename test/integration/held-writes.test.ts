// Writes held to the end of the event-loop turn (src/outbox.ts) must never be lost or
// reordered by a path that ends, resets or hands over a socket behind the Outbox's back.
// Each case makes the two events meet in one turn of the gateway's loop: bytes the gateway
// holds, and whatever would end the socket they are held for.

import { once } from 'node:events'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import tls from 'node:tls'
import { describe, expect, it } from 'vitest'
import { createCertificates } from '../../src/listeners/certificate-authority.js'
import { useTestScope, within } from '../helpers/test-scope.js'
import { rawUpstream } from '../helpers/upstream.js'

const scope = useTestScope()

const KEY = 'dGhlIHNhbXBsZSBub25jZQ=='
const ACCEPT = 's3pPLMBiTxaQ9kYGzzhZRbK+xOo='
const UPGRADE = `GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${KEY}\r\n\r\n`
const SWITCHING = `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${ACCEPT}\r\n\r\n`

/** Resolves once `socket` has received a complete head; `seen` gets every chunk. */
function headReceived(socket: net.Socket): Promise<string> {
  return new Promise((resolve) => {
    let got = ''
    const on = (d: Buffer): void => {
      got += d.toString('latin1')
      if (got.includes('\r\n\r\n')) {
        socket.off('data', on)
        resolve(got)
      }
    }
    socket.on('data', on)
  })
}

/** A raw upstream socket and a raw client with an open websocket tunnel between them. */
async function rawTunnel(): Promise<{ client: net.Socket; up: net.Socket }> {
  const server = net.createServer({ allowHalfOpen: true })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  scope.defer(() => new Promise((r) => server.close(r)))
  const accepted = once(server, 'connection') as Promise<[net.Socket]>
  const gw = await scope.gateway(`127.0.0.1:${(server.address() as net.AddressInfo).port}`)
  const client = await scope.connect(gw.port())
  const switched = headReceived(client)
  client.write(UPGRADE)
  const [up] = await accepted
  up.on('error', () => {})
  scope.defer(() => up.destroy())
  await within(headReceived(up), 2000, 'the upgrade request upstream')
  up.write(SWITCHING)
  expect(await within(switched, 2000, 'the 101 at the client')).toContain(' 101 ')
  return { client, up }
}

function collect(socket: net.Socket): () => string {
  const chunks: Buffer[] = []
  socket.on('data', (d: Buffer) => chunks.push(d))
  return () => Buffer.concat(chunks).toString('latin1')
}

describe('held writes in a websocket tunnel', () => {
  it('passes on client bytes that cross the upstream\'s FIN (the upstream side is not half-open)', async () => {
    const { client, up } = await rawTunnel()
    const atUpstream = collect(up)
    const upEnded = once(up, 'end')
    // Written in one go, both reach the gateway in the same turn: the client's bytes are
    // held for the upstream socket, which node then ends itself on the upstream's FIN.
    client.write('client frame')
    up.end()
    await within(upEnded, 3000, 'the FIN from the gateway at the upstream')
    expect(atUpstream()).toBe('client frame')
  })
  for (const [what, after] of [['nothing', ''], ['a frame', 'frame']] as const) {
    it(`relays a 101 with ${what} behind it ahead of the end an upstream reset makes of it in the same turn`, async () => {
      const server = net.createServer({ allowHalfOpen: true }, (s) => {
        s.on('error', () => {})
        scope.defer(() => s.destroy())
        // A reset right behind the bytes: the gateway reads both in one turn (it takes the
        // reset for an end, reset-probe.ts), and the tunnel passes that end on at once.
        void headReceived(s).then(() => {
          s.write(SWITCHING + after)
          s.resetAndDestroy()
        })
      })
      server.listen(0, '127.0.0.1')
      await once(server, 'listening')
      scope.defer(() => new Promise((r) => server.close(r)))
      const gw = await scope.gateway(`127.0.0.1:${(server.address() as net.AddressInfo).port}`)
      for (let i = 0; i < 5; i++) {
        const client = await scope.connect(gw.port())
        const received = collect(client)
        // The 101 is written through the exchange's Outbox, what follows through the tunnel's.
        client.write(UPGRADE)
        await within(once(client, 'close'), 3000, 'the client closed')
        expect(received()).toBe(SWITCHING + after)
      }
    })
  }
})

describe('held writes on an HTTPS listener', () => {
  it('relays the bytes it has before it cuts a response short (the upstream reset mid-body)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gw-held-tls-'))
    scope.defer(() => rmSync(dir, { recursive: true, force: true }))
    const files = await createCertificates({ outDir: dir, hosts: ['localhost', '127.0.0.1'] })
    // The head and the first body bytes, then a reset: the gateway reads both in one turn,
    // holds the bytes for the client and aborts it (no close_notify) in that same turn.
    const up = await rawUpstream((socket) => {
      socket.write('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nthe first ten')
      socket.resetAndDestroy()
    })
    scope.defer(() => up.close())
    const gw = await scope.gateway(up.target, {
      listeners: [{ name: 'https', port: 0, host: '127.0.0.1', tls: { cert: files.cert, key: files.key } }],
    })
    for (let i = 0; i < 3; i++) {
      const client = tls.connect({ host: '127.0.0.1', port: gw.port('https'), servername: 'localhost', ca: readFileSync(files.caCert) })
      client.on('error', () => {})
      scope.defer(() => client.destroy())
      await once(client, 'secureConnect')
      const received = collect(client)
      client.write('GET / HTTP/1.1\r\nHost: h\r\n\r\n')
      await within(once(client, 'close'), 3000, 'the gateway to cut the response short')
      expect(received()).toMatch(/^HTTP\/1\.1 200 OK\r\n[^]*\r\n\r\nthe first ten$/)
    }
  })
})
