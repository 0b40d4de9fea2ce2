import net from 'node:net'
import { describe, expect, it } from 'vitest'
import { DeadlineSweeper } from '../../src/timers.js'
import { Tunnel } from '../../src/websocket/tunnel.js'
import { useTestScope, within } from '../helpers/test-scope.js'

const scope = useTestScope()

function received(socket: net.Socket): Promise<string> {
  const chunks: Buffer[] = []
  socket.on('data', (c: Buffer) => chunks.push(c))
  return new Promise((resolve) => socket.once('close', () => resolve(Buffer.concat(chunks).toString())))
}

describe('Tunnel', () => {
  it('delivers bytes it holds when it is torn down in the turn they arrived (a registry teardown, say)', async () => {
    const client = await scope.socketPair()
    const upstream = await scope.socketPair()
    const sweeper = new DeadlineSweeper()
    scope.defer(() => sweeper.close())
    const info = { listener: 'http', target: 'up', workspaceKey: null, routeId: 'all' }
    const tunnel = new Tunnel(client.local, upstream.local, info, 60_000, sweeper, () => {})
    const atUpstream = received(upstream.peer)
    const atClient = received(client.peer)
    // Both reads and the teardown in one turn, as node would deliver them from one poll.
    client.local.emit('data', Buffer.from('last words up'))
    upstream.local.emit('data', Buffer.from('last words down'))
    tunnel.close()
    expect(await within(atUpstream, 2000, 'the upstream side closing')).toBe('last words up')
    expect(await within(atClient, 2000, 'the client side closing')).toBe('last words down')
    expect(client.local.destroyed && upstream.local.destroyed).toBe(true)
  })
})
