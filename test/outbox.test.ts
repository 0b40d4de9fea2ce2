import { once } from 'node:events'
import net from 'node:net'
import { describe, expect, it } from 'vitest'
import { HOLD_BYTES, Outbox } from '../src/outbox.js'
import { useTestScope } from './helpers/test-scope.js'

const scope = useTestScope()

/** A connected pair: `local` is written through an Outbox, `peer` collects what arrives. */
async function pair(): Promise<{ local: net.Socket; peer: net.Socket; out: Outbox; received: () => Buffer; ended: Promise<unknown> }> {
  const { local, peer } = await scope.socketPair()
  const chunks: Buffer[] = []
  peer.on('data', (c: Buffer) => chunks.push(c))
  const ended = once(peer, 'end')
  return { local, peer, out: new Outbox(local), received: () => Buffer.concat(chunks), ended }
}

const nextTurn = (): Promise<void> => new Promise((r) => setImmediate(r))

async function until(check: () => boolean): Promise<void> {
  while (!check()) await new Promise((r) => setTimeout(r, 5))
}

describe('Outbox', () => {
  it('holds small writes to several sockets until the end of the turn, then sends each', async () => {
    const a = await pair()
    const b = await pair()
    expect(a.out.write('GET / HTTP/1.1\r\n\r\n')).toBe(true)
    expect(b.out.write(Buffer.from('HTTP/1.1 204 No Content\r\n\r\n'))).toBe(true)
    expect(a.local.bytesWritten).toBe(0)
    expect(b.local.bytesWritten).toBe(0)
    await nextTurn()
    expect(a.local.bytesWritten).toBe(18)
    expect(b.local.bytesWritten).toBe(27)
    await until(() => a.received().length === 18 && b.received().length === 27)
    expect(a.received().toString('latin1')).toBe('GET / HTTP/1.1\r\n\r\n')
    expect(b.received().toString('latin1')).toBe('HTTP/1.1 204 No Content\r\n\r\n')
  })

  it('keeps the order of writes to one socket, held or not, and writes strings as latin1', async () => {
    const p = await pair()
    p.out.write('a\u00fc')
    p.out.write(Buffer.from('b'))
    p.out.write(Buffer.alloc(HOLD_BYTES + 1, 'c'))
    p.out.write('d')
    await until(() => p.received().length === 2 + 1 + HOLD_BYTES + 1 + 1)
    const got = p.received()
    expect(got.subarray(0, 3)).toEqual(Buffer.from([0x61, 0xfc, 0x62]))
    expect(got.subarray(3, 3 + HOLD_BYTES + 1).every((x) => x === 0x63)).toBe(true)
    expect(got.subarray(-1).toString()).toBe('d')
  })

  it('sends a write over HOLD_BYTES at once', async () => {
    const p = await pair()
    p.out.write(Buffer.alloc(HOLD_BYTES + 1))
    expect(p.local.bytesWritten).toBe(HOLD_BYTES + 1)
  })

  it('sends what is held before the end, and the end after it', async () => {
    const p = await pair()
    p.out.write('x')
    p.out.end(Buffer.from('y'))
    await p.ended
    expect(p.received().toString()).toBe('xy')
  })

  it('reports a full socket, holds nothing while it is full, and loses no byte', async () => {
    const p = await pair()
    p.peer.pause()
    const chunk = Buffer.alloc(HOLD_BYTES, 'z')
    let written = 0
    let full = false
    // The kernel's buffers take some megabytes on loopback; a socket that never reports
    // full within 256 MiB would mean backpressure is lost.
    while (!full && written < 256 * 1024 * 1024) {
      full = !p.out.write(chunk)
      written += chunk.length
      if (!full && written % (4 * 1024 * 1024) === 0) await nextTurn()
    }
    expect(full).toBe(true)
    // Full: the next write is queued by node, not held.
    expect(p.out.write('!')).toBe(false)
    expect(p.local.writableLength).toBeGreaterThan(0)
    const drained = once(p.local, 'drain')
    p.peer.resume()
    await drained
    await until(() => p.received().length === written + 1)
    expect(p.received().subarray(-2).toString()).toBe('z!')
  })

  it('drops what is held for a socket destroyed meanwhile, without an error', async () => {
    const p = await pair()
    const errors: unknown[] = []
    p.local.on('error', (e) => errors.push(e))
    p.out.write('lost')
    p.local.destroy()
    await nextTurn()
    await once(p.peer, 'close')
    expect(p.received().length).toBe(0)
    expect(errors).toEqual([])
  })

  it('flush sends what is held now (before a tunnel takes the socket over)', async () => {
    const p = await pair()
    p.out.write('101')
    p.out.flush()
    expect(p.local.bytesWritten).toBe(3)
    p.local.write(' then raw') // what the tunnel writes itself
    await until(() => p.received().length === 12)
    expect(p.received().toString()).toBe('101 then raw')
  })
})
