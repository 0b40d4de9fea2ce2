// Writes held to the end of the event-loop turn (src/outbox.ts) must never be lost or
// reordered by a path that ends, resets or hands over a socket behind the Outbox's back.
// Each case makes the two events meet in one turn of the gateway's loop: bytes the gateway
// holds, and whatever would end the socket they are held for.

import { once } from 'node:events'
import net from 'node:net'
import { describe, expect, it } from 'vitest'
import { useTestScope, within } from '../helpers/test-scope.js'

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
})
