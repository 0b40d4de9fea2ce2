import { describe, expect, it } from 'vitest'
import type { RegistryEvent } from '../../src/registry/registry-source.js'
import { ReplicaRegistry } from '../../src/workers/replica-registry.js'

describe("a worker's replica of the embedded registry", () => {
  it('applies a snapshot and then events, telling listeners what each change replaced', () => {
    const r = new ReplicaRegistry()
    const seen: RegistryEvent[] = []
    r.subscribe((e) => seen.push(e))
    r.applySnapshot({ version: 3, servers: [{ key: 'a', target: 'h:1' }, { key: 'b', target: 'h:2' }] })
    expect(r.get('a')?.target).toBe('h:1')
    r.apply({ op: 'put', version: 4, server: { key: 'a', target: 'h:9' } })
    r.apply({ op: 'delete', version: 5, key: 'b' })
    expect(r.get('a')?.target).toBe('h:9')
    expect(r.get('b')).toBeNull()
    expect(seen.slice(2)).toEqual([
      { op: 'put', version: 4, server: { key: 'a', target: 'h:9' }, previous: { key: 'a', target: 'h:1' } },
      { op: 'delete', version: 5, key: 'b', previous: { key: 'b', target: 'h:2' } },
    ])
    expect(r.state().lastVersion).toBe(5)
  })

  it('turns a later snapshot into the changes it implies', () => {
    const r = new ReplicaRegistry()
    r.applySnapshot({ version: 1, servers: [{ key: 'a', target: 'h:1' }, { key: 'b', target: 'h:2' }] })
    const seen: RegistryEvent[] = []
    r.subscribe((e) => seen.push(e))
    r.applySnapshot({ version: 7, servers: [{ key: 'a', target: 'h:1' }, { key: 'c', target: 'h:3' }] })
    expect(seen.map((e) => `${e.op}:${'key' in e ? e.key : e.op === 'put' ? e.server.key : ''}`)).toEqual(['delete:b', 'put:c'])
  })
})
