import { describe, expect, it } from 'vitest'
import { parseServerEntry } from '../../src/registry/server-entry.js'

describe('parseServerEntry', () => {
  it('accepts the contract example and keeps only known fields', () => {
    expect(parseServerEntry({ key: '32770_node1', target: 'node1:32770', workspaceId: 'w1', server: 'wsagent', extra: 1 }, ''))
      .toEqual({ key: '32770_node1', target: 'node1:32770', workspaceId: 'w1', server: 'wsagent' })
  })

  it('lowercases the key and reads null optional fields as absent', () => {
    expect(parseServerEntry({ key: 'A.WS.example.com', target: '[::1]:4401', workspaceId: null }, ''))
      .toEqual({ key: 'a.ws.example.com', target: '[::1]:4401' })
  })

  it('names the JSON path of every problem', () => {
    expect(parseServerEntry({ key: '', target: 'node1', server: 5 }, 'servers[2]')).toEqual([
      { path: 'servers[2].key', message: expect.any(String) },
      { path: 'servers[2].target', message: expect.any(String) },
      { path: 'servers[2].server', message: expect.any(String) },
    ])
  })

  it('refuses bad targets', () => {
    for (const target of ['node1', 'node1:0', 'node1:65536', 'node1:08', ':80', 'a..b:80', 'a b:80', '[zz]:80', 'node1:80/x', 42]) {
      expect(Array.isArray(parseServerEntry({ key: 'k', target }, '')), String(target)).toBe(true)
    }
  })

  it('refuses bad keys and non-objects', () => {
    for (const key of ['a'.repeat(256), 'a/b', 'a b', 'é', 7]) {
      expect(Array.isArray(parseServerEntry({ key, target: 'n:1' }, '')), String(key)).toBe(true)
    }
    expect(parseServerEntry(null, '')).toEqual([{ path: '$', message: 'must be an object' }])
    expect(Array.isArray(parseServerEntry([], 'x'))).toBe(true)
    expect(Array.isArray(parseServerEntry('k', 'x'))).toBe(true)
  })
})
