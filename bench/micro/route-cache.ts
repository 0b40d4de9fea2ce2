// The route cache in remote-registry mode (an LRU in front of the master): lookup cost for
// 1k to 1M cached entries (it must stay flat), and heap bytes per cached entry (1M entries
// must fit well under 1 GiB).

import { RouteCache } from '../../src/routing/route-cache.js'
import type { RegistryEvent, RegistrySnapshot, RegistrySource, RegistrySourceState } from '../../src/registry/registry-source.js'
import type { ServerEntry } from '../../src/registry/server-entry.js'
import { collect, nsPerOp, row } from '../micro-timing.js'

/** A registry that knows every key `{port}_node{n}` and answers at once. */
class InstantRegistry implements RegistrySource {
  lookup(key: string): Promise<ServerEntry | null> {
    const port = key.slice(0, key.indexOf('_'))
    return Promise.resolve({ key, target: `10.0.${Number(port) % 250}.${Number(port) % 200}:${port}`, workspaceId: `w${port}`, server: 'terminal' })
  }
  list(): Promise<RegistrySnapshot> { return Promise.resolve({ version: 0, servers: [] }) }
  subscribe(): () => void { return () => {} }
  state(): RegistrySourceState {
    return { connected: true, lastVersion: 0, lastEventAt: null, lastEventLagMs: null, lookupErrors: 0, streamErrors: 0, eventErrors: 0 }
  }
}

const key = (i: number): string => `${32768 + (i % 32000)}_node${Math.floor(i / 32000)}.example.com`

process.stdout.write('route cache (remote registry mode)\n')
for (const n of [1_000, 100_000, 1_000_000]) {
  await collect()
  const before = process.memoryUsage().heapUsed
  const cache = new RouteCache(new InstantRegistry(), { cacheSize: n, cacheTtlMs: 3_600_000, negativeTtlMs: 2000, staleIfErrorMs: 600_000 })
  for (let i = 0; i < n; i += 10_000) {
    const batch: Promise<unknown>[] = []
    for (let j = i; j < Math.min(n, i + 10_000); j++) batch.push(cache.resolve(key(j)) as Promise<unknown>)
    await Promise.all(batch)
  }
  await collect()
  const perEntry = (process.memoryUsage().heapUsed - before) / n
  // The same number of distinct hot keys at every size, spread over the whole cache, so the
  // figures differ only by the size of the table they live in.
  const keys = Array.from({ length: 1000 }, (_, i) => key(Math.floor((i * n) / 1000)))
  const ns = nsPerOp((i) => cache.resolve(keys[i % 1000]))
  process.stdout.write(`${row(`${n} entries, cached hit`, ns, `${Math.round(perEntry)} bytes/entry, ${((perEntry * n) / 2 ** 20).toFixed(0)} MiB`)}\n`)
  cache.close()
}
