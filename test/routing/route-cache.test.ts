import { afterEach, describe, expect, it } from 'vitest'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { GatewayError } from '../../src/errors.js'
import { EmbeddedRegistry } from '../../src/registry/embedded-registry.js'
import { RegistryClient } from '../../src/registry/registry-client.js'
import type { ServerEntry } from '../../src/registry/server-entry.js'
import { RouteCache } from '../../src/routing/route-cache.js'
import type { RouteCacheOptions } from '../../src/routing/route-cache.js'
import { FakeRegistry, waitFor } from '../helpers/fake-registry.js'

const node1: ServerEntry = { key: '32770_node1', target: 'node1:32770', workspaceId: 'w1', server: 'wsagent' }
const moved: ServerEntry = { ...node1, target: 'node2:32770' }
const other: ServerEntry = { key: '32771_node1', target: 'node1:32771' }

const LONG: RouteCacheOptions = { cacheSize: 1000, cacheTtlMs: 60_000, negativeTtlMs: 60_000, staleIfErrorMs: 60_000 }

let fake: FakeRegistry | undefined
let client: RegistryClient | undefined
let cache: RouteCache | undefined
let embedded: EmbeddedRegistry | undefined
let dir: string | undefined

async function setup(options: Partial<RouteCacheOptions> = {}): Promise<{ fake: FakeRegistry; cache: RouteCache; client: RegistryClient }> {
  fake = await FakeRegistry.start()
  client = new RegistryClient({ url: fake.url, backoffMinMs: 10, backoffMaxMs: 40, headersTimeoutMs: 500 })
  cache = new RouteCache(client, { ...LONG, ...options })
  return { fake, cache, client }
}

type Change = [string, ServerEntry | null, ServerEntry | null]

function recordChanges(c: RouteCache): Change[] {
  const changes: Change[] = []
  c.on('server-changed', (key, previous, next) => changes.push([key, previous, next]))
  return changes
}

async function connected(c: RegistryClient): Promise<void> {
  await waitFor(() => c.state().connected, 3000, 'event stream connected')
}

function codeOf(err: unknown): string | undefined {
  return err instanceof GatewayError ? err.code : undefined
}

afterEach(async () => {
  cache?.close()
  cache = undefined
  await client?.close()
  client = undefined
  await fake?.close()
  fake = undefined
  embedded?.close()
  await embedded?.store.idle()
  embedded = undefined
  if (dir !== undefined) await rm(dir, { recursive: true, force: true })
  dir = undefined
})

describe('RouteCache over a remote registry', () => {
  it('makes exactly one registry request for 50 concurrent misses of one key', async () => {
    const { fake, cache } = await setup()
    fake.setSilently(node1)
    fake.delayMs = 30
    const answers = await Promise.all(Array.from({ length: 50 }, () => cache.resolve('32770_node1')))
    expect(answers.every((a) => a !== null && a.target === 'node1:32770')).toBe(true)
    expect(fake.lookupCount('32770_node1')).toBe(1)
    expect(cache.stats()).toMatchObject({ misses: 50, hits: 0, size: 1 })
  })

  it('answers a cached key synchronously, without asking the registry again', async () => {
    const { fake, cache } = await setup()
    fake.setSilently(node1)
    expect(cache.resolve('32770_node1')).toBeInstanceOf(Promise)
    await cache.resolve('32770_node1')
    const hit = cache.resolve('32770_node1')
    expect(hit).toEqual(node1)
    expect(fake.lookupCount('32770_node1')).toBe(1)
    expect(cache.stats().hits).toBe(1)
  })

  it('caches "unknown" synchronously for negativeTtlMs, then asks again', async () => {
    const { fake, cache } = await setup({ negativeTtlMs: 40 })
    expect(await cache.resolve('32771_node1')).toBeNull()
    expect(cache.resolve('32771_node1')).toBeNull()
    expect(fake.lookupCount('32771_node1')).toBe(1)
    fake.setSilently(other)
    const found = await waitFor(() => {
      const r = cache.resolve('32771_node1')
      return r instanceof Promise ? r : r
    }, 3000, 'negative entry expired')
    expect(found).toEqual(other)
    expect(fake.lookupCount('32771_node1')).toBe(2)
  })

  it('after cacheTtlMs serves the entry synchronously while revalidating it in the background', async () => {
    const { fake, cache } = await setup({ cacheTtlMs: 40 })
    fake.setSilently(node1)
    await cache.resolve('32770_node1')
    fake.setSilently(moved)
    const changes = recordChanges(cache)
    await waitFor(() => {
      const r = cache.resolve('32770_node1')
      expect(r).not.toBeInstanceOf(Promise)
      return fake.lookupCount('32770_node1') === 2
    }, 3000, 'background revalidation')
    await waitFor(() => changes.length === 1, 3000, 'change found by revalidation')
    expect(changes[0]).toEqual(['32770_node1', node1, moved])
    expect(cache.resolve('32770_node1')).toEqual(moved)
  })

  it('a delete event makes the next resolve null within 100 ms and emits server-changed', async () => {
    const { fake, cache, client } = await setup()
    fake.setSilently(node1)
    await cache.resolve('32770_node1')
    await connected(client)
    const changes = recordChanges(cache)
    const changed = new Promise<number>((resolve) => cache.once('server-changed', () => resolve(performance.now())))
    const start = performance.now()
    fake.delete('32770_node1')
    expect(await changed - start).toBeLessThan(100)
    expect(cache.resolve('32770_node1')).toBeNull()
    expect(changes).toEqual([['32770_node1', node1, null]])
    expect(fake.lookupCount('32770_node1')).toBe(1)
    expect(cache.stats().eventsApplied).toBe(1)
  })

  it('a move event (put with a new target) emits server-changed with previous and next', async () => {
    const { fake, cache, client } = await setup()
    fake.setSilently(node1)
    await cache.resolve('32770_node1')
    await connected(client)
    const changes = recordChanges(cache)
    fake.put(moved, Date.now())
    await waitFor(() => changes.length === 1, 3000, 'server-changed')
    expect(changes[0]).toEqual(['32770_node1', node1, moved])
    expect(cache.resolve('32770_node1')).toEqual(moved)
    expect(cache.stats().lastEventLagMs).not.toBeNull()
  })

  it('a put that keeps the target emits nothing but updates the entry', async () => {
    const { fake, cache, client } = await setup()
    fake.setSilently(node1)
    await cache.resolve('32770_node1')
    await connected(client)
    const changes = recordChanges(cache)
    fake.put({ ...node1, server: 'terminal' })
    await waitFor(() => cache.stats().eventsApplied === 1, 3000, 'event applied')
    expect(changes).toEqual([])
    expect(cache.resolve('32770_node1')).toEqual({ ...node1, server: 'terminal' })
  })

  it('an event overtaking a lookup in flight wins', async () => {
    const { fake, cache, client } = await setup()
    await connected(client)
    fake.setSilently(node1)
    fake.delayMs = 100
    const pending = cache.resolve('32770_node1')
    await waitFor(() => fake!.lookupCount('32770_node1') === 1, 3000, 'lookup sent')
    fake.delayMs = 0
    fake.delete('32770_node1')
    await waitFor(() => cache.stats().eventsApplied === 1, 3000, 'event applied')
    expect(await pending).toBeNull()
    expect(cache.resolve('32770_node1')).toBeNull()
  })

  it('while the registry is down serves cached entries up to staleIfErrorMs, and misses get registry_unavailable', async () => {
    const { fake, cache } = await setup({ cacheTtlMs: 30, staleIfErrorMs: 300 })
    fake.setSilently(node1)
    await cache.resolve('32770_node1')
    await fake.down()
    expect(codeOf(await Promise.resolve(cache.resolve('32771_node1')).catch((e: unknown) => e))).toBe('registry_unavailable')
    // past its TTL the entry is still served, synchronously, while its revalidation fails
    await waitFor(() => {
      expect(cache.resolve('32770_node1')).toEqual(node1)
      return cache.stats().registryErrors >= 2
    }, 3000, 'failed revalidation')
    expect(cache.resolve('32770_node1')).toEqual(node1)
    expect(cache.stats().staleServed).toBeGreaterThan(0)
    // past TTL + staleIfErrorMs it is a miss, and the registry is still down
    const err = await waitFor(async () => {
      try {
        await cache.resolve('32770_node1')
        return undefined
      } catch (e) {
        return e
      }
    }, 3000, 'stale window over')
    expect(codeOf(err)).toBe('registry_unavailable')
    expect((err as GatewayError).statusCode).toBe(503)
  })

  it('when the registry comes back it resolves again and the event stream resumes from since=lastVersion', async () => {
    const { fake, cache, client } = await setup()
    fake.put(node1)
    await connected(client)
    expect(await cache.resolve('32770_node1')).toEqual(node1)
    await fake.down()
    await waitFor(() => !cache.stats().connected, 3000, 'disconnected')
    expect(codeOf(await Promise.resolve(cache.resolve('32771_node1')).catch((e: unknown) => e))).toBe('registry_unavailable')
    await fake.up()
    fake.setSilently(other)
    expect(await cache.resolve('32771_node1')).toEqual(other)
    await waitFor(() => cache.stats().connected, 3000, 'reconnected')
    expect(fake.eventRequests.at(-1)).toBe('1')
    const changes = recordChanges(cache)
    fake.delete('32770_node1')
    await waitFor(() => changes.length === 1, 3000, 'event after reconnect')
    expect(cache.resolve('32770_node1')).toBeNull()
  })

  it('a reset drops the cache, emits reset, then server-changed only for keys that moved', async () => {
    const { fake, cache, client } = await setup()
    fake.put(node1)
    fake.put(other)
    await connected(client)
    await cache.resolve('32770_node1')
    await cache.resolve('32771_node1')
    const changes = recordChanges(cache)
    const reset = new Promise<void>((resolve) => cache.once('reset', resolve))
    fake.setSilently(moved)
    fake.sendReset()
    await reset
    await waitFor(() => changes.length === 1, 3000, 'reconciled')
    expect(changes).toEqual([['32770_node1', node1, moved]])
    expect(cache.resolve('32770_node1')).toEqual(moved)
    expect(cache.resolve('32771_node1')).toEqual(other)
    expect(fake.lookupCount('32770_node1')).toBe(1)
  })

  it('purge drops one key or all, so the next resolve asks the registry', async () => {
    const { fake, cache } = await setup()
    fake.setSilently(node1)
    fake.setSilently(other)
    await cache.resolve('32770_node1')
    await cache.resolve('32771_node1')
    cache.purge('32770_node1')
    expect(cache.stats().size).toBe(1)
    const again = cache.resolve('32770_node1')
    expect(again).toBeInstanceOf(Promise)
    expect(await again).toEqual(node1)
    expect(fake.lookupCount('32770_node1')).toBe(2)
    expect(cache.resolve('32771_node1')).toEqual(other)
    cache.purge()
    expect(cache.stats().size).toBe(0)
    const other2 = cache.resolve('32771_node1')
    expect(other2).toBeInstanceOf(Promise)
    await other2
  })

  it('keeps at most cacheSize keys', async () => {
    const { cache } = await setup({ cacheSize: 3 })
    for (let i = 1; i <= 10; i++) await cache.resolve(`${i}_node1`)
    expect(cache.stats().size).toBe(3)
  })

  for (const mode of ['invalid-json', 'wrong-shape', 'wrong-key', 'status-500', 'huge', 'huge-chunked'] as const) {
    it(`treats a ${mode} answer as registry_unavailable and caches nothing from it`, async () => {
      const { fake, cache } = await setup()
      fake.setSilently(node1)
      fake.mode = mode
      const err = await Promise.resolve(cache.resolve('32770_node1')).catch((e: unknown) => e)
      expect(codeOf(err)).toBe('registry_unavailable')
      expect(cache.stats()).toMatchObject({ size: 0, registryErrors: 1 })
      fake.mode = 'ok'
      expect(await cache.resolve('32770_node1')).toEqual(node1)
    })
  }

  it('a registry that stalls past its timeouts is registry_unavailable', async () => {
    const { fake, cache } = await setup()
    fake.mode = 'hang'
    const err = await Promise.resolve(cache.resolve('32770_node1')).catch((e: unknown) => e)
    expect(codeOf(err)).toBe('registry_unavailable')
  })
})

describe('RouteCache over the embedded registry', () => {
  async function setupEmbedded(): Promise<{ registry: EmbeddedRegistry; cache: RouteCache }> {
    dir = await mkdtemp(join(tmpdir(), 'route-cache-'))
    embedded = await EmbeddedRegistry.open(join(dir, 'registry.json'))
    cache = new RouteCache(embedded, LONG)
    return { registry: embedded, cache }
  }

  it('resolves synchronously from the registry itself, known or not', async () => {
    const { registry, cache } = await setupEmbedded()
    await registry.put(node1)
    expect(cache.resolve('32770_node1')).toEqual(node1)
    expect(cache.resolve('32771_node1')).toBeNull()
    expect(cache.stats()).toMatchObject({ size: 1, hits: 2, misses: 0, connected: true })
  })

  it('emits server-changed with the real previous entry on move and delete', async () => {
    const { registry, cache } = await setupEmbedded()
    const changes = recordChanges(cache)
    await registry.put(node1)
    await registry.put({ ...node1, server: 'terminal' })
    await registry.put(moved)
    await registry.delete('32770_node1')
    expect(changes).toEqual([
      ['32770_node1', null, node1],
      ['32770_node1', { ...node1, server: 'terminal' }, moved],
      ['32770_node1', moved, null],
    ])
    expect(cache.resolve('32770_node1')).toBeNull()
  })
})
