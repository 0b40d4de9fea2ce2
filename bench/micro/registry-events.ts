// How long a registry change takes to reach routing: a fake master registry publishes puts
// over server-sent events; the gateway's registry client and route cache apply them. Measured
// from the registry's write to the cache answering the new target (p50, p99 over 500 events).

import { RegistryClient } from '../../src/registry/registry-client.js'
import { RouteCache } from '../../src/routing/route-cache.js'
import { FakeRegistry, waitFor } from '../../test/helpers/fake-registry.js'

const fake = await FakeRegistry.start()
const client = new RegistryClient({ url: fake.url })
const cache = new RouteCache(client, { cacheSize: 10_000, cacheTtlMs: 3_600_000, negativeTtlMs: 2000, staleIfErrorMs: 600_000 })
const KEYS = 50
for (let k = 0; k < KEYS; k++) fake.setSilently({ key: `${32768 + k}_node1`, target: `127.0.0.1:${20000 + k}` })
for (let k = 0; k < KEYS; k++) await cache.resolve(`${32768 + k}_node1`)
await waitFor(() => client.state().connected, 5000, 'the event stream')

const latencies: number[] = []
for (let i = 0; i < 500; i++) {
  const k = i % KEYS
  const key = `${32768 + k}_node1`
  const target = `127.0.0.1:${30000 + i}`
  const changed = new Promise<void>((resolve) => {
    const on = (changedKey: string): void => {
      if (changedKey === key) {
        cache.off('server-changed', on)
        resolve()
      }
    }
    cache.on('server-changed', on)
  })
  const t0 = performance.now()
  fake.put({ key, target })
  await changed
  const seen = cache.resolve(key)
  if (seen instanceof Promise || seen?.target !== target) throw new Error(`cache did not apply the event for ${key}`)
  latencies.push(performance.now() - t0)
}
latencies.sort((a, b) => a - b)
const pct = (p: number): string => latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))].toFixed(2)
process.stdout.write(`registry event -> routing (500 events over SSE)   p50 ${pct(50)} ms   p99 ${pct(99)} ms   max ${pct(100)} ms\n`)
cache.close()
await client.close()
await fake.close()
