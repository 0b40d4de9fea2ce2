import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { RegistryStore, StateFileError } from '../../src/registry/registry-store.js'

let dir: string
let file: string

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'registry-store-'))
  file = join(dir, 'registry.json')
})

afterEach(async () => {
  await rm(dir, { recursive: true, force: true })
})

const node1 = { key: '32770_node1', target: 'node1:32770' }

describe('RegistryStore', () => {
  it('starts empty when the file does not exist, and creates it (and its folder) on the first update', async () => {
    file = join(dir, 'data', 'registry.json')
    const store = await RegistryStore.open(file)
    expect(store.document).toEqual({ version: 0, servers: [] })
    expect(await store.update((d) => { d.servers = [node1] })).toBe(1)
    expect(JSON.parse(await readFile(file, 'utf8'))).toEqual({ version: 1, servers: [node1] })
  })

  it('writes atomically: valid content, mode 0600, no temp file left', async () => {
    const store = await RegistryStore.open(file)
    await store.update((d) => { d.servers = [node1] })
    expect(await readdir(dir)).toEqual(['registry.json'])
    expect((await stat(file)).mode & 0o777).toBe(0o600)
    const reopened = await RegistryStore.open(file)
    expect(reopened.document).toEqual({ version: 1, servers: [node1] })
  })

  it('serializes concurrent updates: each gets its own version and none is lost', async () => {
    const store = await RegistryStore.open(file)
    const versions = await Promise.all(Array.from({ length: 50 }, (_, i) => store.update((d) => {
      d.servers = [...d.servers, { key: `k${i}`, target: `node1:${1000 + i}` }]
    })))
    expect(new Set(versions).size).toBe(50)
    expect(Math.max(...versions)).toBe(50)
    const onDisk = JSON.parse(await readFile(file, 'utf8'))
    expect(onDisk.version).toBe(50)
    expect(onDisk.servers).toHaveLength(50)
    expect(await readdir(dir)).toEqual(['registry.json'])
  })

  it('keeps sections it does not own (routes) through its own updates, and lets their owner update them', async () => {
    const routes = [{ id: 'ide', pathPrefix: '/ide', targets: ['127.0.0.1:3000'] }]
    await writeFile(file, JSON.stringify({ version: 4, servers: [], routes, future: { x: 1 } }))
    const store = await RegistryStore.open(file)
    await store.update((d) => { d.servers = [node1] })
    let onDisk = JSON.parse(await readFile(file, 'utf8'))
    expect(onDisk).toEqual({ version: 5, servers: [node1], routes, future: { x: 1 } })
    await store.update((d) => { d.routes = [] })
    onDisk = JSON.parse(await readFile(file, 'utf8'))
    expect(onDisk).toEqual({ version: 6, servers: [node1], routes: [], future: { x: 1 } })
  })

  it('refuses a file that is not JSON, naming the file, and leaves it untouched', async () => {
    await writeFile(file, '{"version": 3, "servers": [')
    const err = await RegistryStore.open(file).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(StateFileError)
    expect((err as Error).message).toContain(file)
    expect((err as Error).message).toMatch(/not JSON/)
    expect(await readFile(file, 'utf8')).toBe('{"version": 3, "servers": [')
  })

  it('refuses bad entries and duplicate keys, naming their JSON path', async () => {
    await writeFile(file, JSON.stringify({ version: 1, servers: [node1, { key: 'k', target: 'nope' }, node1] }))
    const err = await RegistryStore.open(file).catch((e: unknown) => e) as StateFileError
    expect(err).toBeInstanceOf(StateFileError)
    expect(err.errors.map((e) => e.path)).toEqual(['servers[1].target', 'servers[2].key'])
    expect(err.message).toContain(file)
  })

  it('refuses a file that is not an object or has a bad version', async () => {
    await writeFile(file, '[]')
    await expect(RegistryStore.open(file)).rejects.toBeInstanceOf(StateFileError)
    await writeFile(file, '{"version": -1}')
    await expect(RegistryStore.open(file)).rejects.toThrow(/version/)
  })

  it('rejects a mutation that leaves invalid servers, without changing anything', async () => {
    const store = await RegistryStore.open(file)
    await store.update((d) => { d.servers = [node1] })
    await expect(store.update((d) => { d.servers = [{ key: 'x', target: 'bad' }] })).rejects.toThrow(/servers\[0\]\.target/)
    await expect(store.update(() => { throw new Error('mutator failed') })).rejects.toThrow('mutator failed')
    expect(store.document).toEqual({ version: 1, servers: [node1] })
    expect(JSON.parse(await readFile(file, 'utf8')).version).toBe(1)
  })

  it('a mutator returning false changes nothing and writes nothing', async () => {
    const store = await RegistryStore.open(file)
    expect(await store.update(() => false)).toBe(0)
    expect(await readdir(dir)).toEqual([])
  })

  it('a failed write rejects the update and keeps the previous document', async () => {
    const store = await RegistryStore.open(file)
    await store.update((d) => { d.servers = [node1] })
    await rm(dir, { recursive: true, force: true })
    await writeFile(dir, 'a file where the folder was')
    await expect(store.update((d) => { d.servers = [] })).rejects.toThrow()
    expect(store.document.servers).toEqual([node1])
    await rm(dir, { force: true })
  })
})
