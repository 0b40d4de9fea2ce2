import { afterEach, describe, expect, it } from 'vitest'
import { RegistryClient } from '../../src/registry/registry-client.js'
import type { RegistryClientOptions } from '../../src/registry/registry-client.js'
import { RegistryError } from '../../src/registry/registry-source.js'
import type { RegistryEvent } from '../../src/registry/registry-source.js'
import { FakeRegistry, waitFor } from '../helpers/fake-registry.js'

const node1 = { key: '32770_node1', target: 'node1:32770', workspaceId: 'w1', server: 'wsagent' }

let fake: FakeRegistry
let client: RegistryClient | undefined

async function setup(options: Partial<RegistryClientOptions> = {}): Promise<RegistryClient> {
  fake = await FakeRegistry.start()
  client = new RegistryClient({ url: fake.url, token: null, backoffMinMs: 10, backoffMaxMs: 50, ...options })
  return client
}

afterEach(async () => {
  await client?.close()
  client = undefined
  await fake?.close()
})

describe('RegistryClient lookups', () => {
  it('returns the entry on 200 and null on 404', async () => {
    const c = await setup()
    fake.setSilently(node1)
    expect(await c.lookup('32770_node1')).toEqual(node1)
    expect(await c.lookup('32771_node1')).toBeNull()
  })

  it('sends the bearer token on lookups and on the event stream', async () => {
    const c = await setup({ token: 's3cret' })
    await c.lookup('32770_node1')
    c.subscribe(() => {})
    await waitFor(() => c.state().connected, 3000, 'stream connected')
    expect(fake.authorizations.length).toBeGreaterThanOrEqual(3)
    expect(new Set(fake.authorizations)).toEqual(new Set(['Bearer s3cret']))
  })

  it('sends no authorization header without a token', async () => {
    const c = await setup()
    await c.lookup('32770_node1')
    expect(fake.authorizations).toEqual([undefined])
  })

  it('percent-encodes the key in the path', async () => {
    const c = await setup()
    await c.lookup('a:b')
    expect(fake.lookupCount('a:b')).toBe(1)
  })

  for (const mode of ['invalid-json', 'wrong-shape', 'wrong-key', 'status-500', 'huge', 'huge-chunked'] as const) {
    it(`rejects with a RegistryError when the registry answers ${mode}`, async () => {
      const c = await setup()
      fake.setSilently(node1)
      fake.mode = mode
      await expect(c.lookup('32770_node1')).rejects.toBeInstanceOf(RegistryError)
      fake.mode = 'ok'
      expect(await c.lookup('32770_node1')).toEqual(node1)
      expect(c.state().lookupErrors).toBe(1)
    })
  }

  it('gives up on a registry that does not answer within the headers timeout', async () => {
    const c = await setup({ headersTimeoutMs: 100 })
    fake.mode = 'hang'
    await expect(c.lookup('32770_node1')).rejects.toBeInstanceOf(RegistryError)
  })

  it('rejects when the registry is down', async () => {
    const c = await setup()
    await fake.down()
    await expect(c.lookup('32770_node1')).rejects.toBeInstanceOf(RegistryError)
  })

  it('gives up on a list the master trickles once the list deadline passes, and closes its connection', async () => {
    const c = await setup({ listTimeoutMs: 200 })
    fake.mode = 'trickle'
    const started = performance.now()
    let outcome: unknown = 'pending'
    c.list().then(() => { outcome = 'answered' }, (err: unknown) => { outcome = err })
    // A byte every 20 ms: the 3 s body timeout (a silence bound) never fires, only the deadline.
    await waitFor(() => outcome !== 'pending', 2000, 'the list to end')
    expect(performance.now() - started).toBeLessThan(1500)
    expect(outcome).toBeInstanceOf(RegistryError)
    expect((outcome as RegistryError).message).toMatch(/^list: .*200 ms/)
    await waitFor(() => fake.openTrickles === 0, 2000, 'the trickled connection closed')
    expect(c.state().lookupErrors).toBe(1)
  })

  it('lists every server with the version', async () => {
    const c = await setup()
    fake.put(node1)
    expect(await c.list()).toEqual({ version: 1, servers: [node1] })
    fake.mode = 'wrong-shape'
    await expect(c.list()).rejects.toBeInstanceOf(RegistryError)
  })
})

describe('RegistryClient event stream', () => {
  it('lists for a starting version, then follows events from it', async () => {
    const c = await setup()
    fake.put(node1)
    const events: RegistryEvent[] = []
    c.subscribe((e) => events.push(e))
    await waitFor(() => c.state().connected, 3000, 'connected')
    expect(fake.eventRequests).toEqual(['1'])
    fake.put({ key: '32771_node1', target: 'node1:32771' }, Date.now() - 40)
    fake.delete('32770_node1')
    await waitFor(() => events.length === 2, 3000, 'two events')
    expect(events).toEqual([
      { op: 'put', version: 2, server: { key: '32771_node1', target: 'node1:32771' }, ts: expect.any(Number) },
      { op: 'delete', version: 3, key: '32770_node1' },
    ])
    const state = c.state()
    expect(state.lastVersion).toBe(3)
    expect(state.lastEventAt).not.toBeNull()
    expect(state.lastEventLagMs).toBeGreaterThanOrEqual(40)
  })

  it('drops an event broken mid-stream and gets it whole after resuming from the last version', async () => {
    const c = await setup()
    const events: RegistryEvent[] = []
    c.subscribe((e) => events.push(e))
    await waitFor(() => c.state().connected, 3000, 'connected')
    fake.put(node1)
    await waitFor(() => events.length === 1, 3000, 'first event')
    fake.breakStreamsMidEvent({ key: '32770_node1', target: 'node2:32770' })
    await waitFor(() => events.length === 2, 3000, 'the broken event, resumed')
    expect(fake.eventRequests).toEqual(['0', '1'])
    expect(events[1]).toEqual({ op: 'put', version: 2, server: { key: '32770_node1', target: 'node2:32770' } })
  })

  it('reconnects with backoff after the registry comes back and resumes from since=lastVersion', async () => {
    const c = await setup()
    const events: RegistryEvent[] = []
    c.subscribe((e) => events.push(e))
    await waitFor(() => c.state().connected, 3000, 'connected')
    fake.put(node1)
    await waitFor(() => events.length === 1, 3000, 'event')
    await fake.down()
    await waitFor(() => !c.state().connected, 3000, 'disconnected')
    await waitFor(() => c.state().streamErrors >= 2, 3000, 'failed reconnects')
    await fake.up()
    fake.delete('32770_node1')
    await waitFor(() => events.length === 2, 3000, 'event after reconnect')
    expect(fake.eventRequests.at(-1)).toBe('1')
    expect(events[1]).toMatchObject({ op: 'delete', key: '32770_node1', version: 2 })
    expect(c.state().connected).toBe(true)
  })

  it('opens the event stream once a master that trickled its list answers properly', async () => {
    const c = await setup({ listTimeoutMs: 200 })
    fake.mode = 'trickle'
    const events: RegistryEvent[] = []
    c.subscribe((e) => events.push(e))
    // The list is retried after its deadline (with backoff), not waited on for ever.
    await waitFor(() => fake.listRequests >= 2, 3000, 'the list retried')
    expect(c.state().lastStreamError).toMatch(/^list: /)
    expect(c.state().connected).toBe(false)
    expect(fake.eventRequests).toEqual([])
    fake.mode = 'ok'
    fake.put(node1)
    await waitFor(() => c.state().connected, 3000, 'connected')
    expect(fake.eventRequests).toEqual(['1'])
    fake.delete('32770_node1')
    await waitFor(() => events.length === 1, 3000, 'an event')
    expect(events[0]).toMatchObject({ op: 'delete', key: '32770_node1', version: 2 })
    await waitFor(() => fake.openTrickles === 0, 2000, 'the trickled connections closed')
  })

  it('emits reset when since is too old, then lists again if the reset carries no version', async () => {
    const c = await setup()
    const events: RegistryEvent[] = []
    c.subscribe((e) => events.push(e))
    await waitFor(() => c.state().connected, 3000, 'connected')
    fake.sendRaw('event: reset\n\n')
    await waitFor(() => events.length === 1, 3000, 'reset')
    expect(events[0]).toEqual({ op: 'reset', version: null })
    expect(c.state().lastVersion).toBe(-1)
    fake.sendReset()
    await waitFor(() => events.length === 2, 3000, 'second reset')
    expect(events[1]).toEqual({ op: 'reset', version: 0 })
  })

  it('skips garbage events without dropping the stream and counts them', async () => {
    const c = await setup()
    const events: RegistryEvent[] = []
    c.subscribe((e) => events.push(e))
    await waitFor(() => c.state().connected, 3000, 'connected')
    fake.sendRaw('id: 1\ndata: {not json\n\n')
    fake.sendRaw('id: 2\ndata: {"op":"put","server":{"key":"k","target":"nope"}}\n\n')
    fake.sendRaw('id: 3\ndata: {"op":"explode"}\n\n')
    fake.sendRaw('id: x\ndata: {"op":"delete","key":"k"}\n\n')
    fake.sendRaw('id: 5\ndata: {"op":"delete","key":"k2"}\n\n')
    await waitFor(() => events.length === 2, 3000, 'the good events')
    // a bad id only costs the version; the change itself is applied
    expect(events[0]).toMatchObject({ op: 'delete', key: 'k', version: 3 })
    expect(events[1]).toMatchObject({ op: 'delete', key: 'k2', version: 5 })
    expect(c.state().eventErrors).toBe(4)
    expect(c.state().connects).toBe(1)
  })

  it('drops a stream with an over-long line and reconnects', async () => {
    const c = await setup({ maxLineLength: 1024 })
    c.subscribe(() => {})
    await waitFor(() => c.state().connected, 3000, 'connected')
    fake.sendRaw(`data: ${'x'.repeat(4096)}`)
    await waitFor(() => c.state().streamErrors === 1 && c.state().connects === 2, 3000, 'reconnected')
  })

  it('close() ends the stream and stops reconnecting', async () => {
    const c = await setup()
    c.subscribe(() => {})
    await waitFor(() => fake.openStreams === 1, 3000, 'stream open')
    await c.close()
    await waitFor(() => fake.openStreams === 0, 3000, 'stream closed')
    expect(c.state().connected).toBe(false)
    await expect(c.lookup('32770_node1')).rejects.toBeInstanceOf(RegistryError)
  })
})
