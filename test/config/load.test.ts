import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { DEFAULTS } from '../../src/config/defaults.js'
import {
  ConfigError, DEFAULT_CONFIG_FILE, formatIssues, loadConfigFile, parseConfig, resolveConfigPath,
} from '../../src/config/load.js'

const repoRoot = fileURLToPath(new URL('../../', import.meta.url))

let dir: string
beforeEach(async () => { dir = await mkdtemp(join(tmpdir(), 'gw-load-')) })
afterEach(async () => { await rm(dir, { recursive: true, force: true }) })

async function writeConfig(content: unknown): Promise<string> {
  const file = join(dir, 'gateway.json')
  await writeFile(file, typeof content === 'string' ? content : JSON.stringify(content, null, 2))
  return file
}

async function issuesOf(file: string) {
  const err = await loadConfigFile(file).then(() => null, (e: unknown) => e)
  expect(err).toBeInstanceOf(ConfigError)
  return (err as ConfigError).issues
}

describe('loadConfigFile', () => {
  it('resolves relative file paths against the config file folder', async () => {
    const file = await writeConfig({
      listeners: [{ name: 'https', port: 0, tls: { cert: 'tls/a.crt', key: '/abs/a.key', sni: [{ hosts: ['x.example.com'], cert: 'x.crt', key: 'x.key' }] } }],
      admin: { tokenFile: 'secret/token' },
      accessLog: { enabled: true, path: 'logs/access.log' },
    })
    const { config, baseDir, file: loadedFile } = await loadConfigFile(file)
    expect(baseDir).toBe(dir)
    expect(loadedFile).toBe(file)
    expect(config.listeners[0].tls).toEqual({
      cert: join(dir, 'tls/a.crt'), key: '/abs/a.key', sni: [{ hosts: ['x.example.com'], cert: join(dir, 'x.crt'), key: join(dir, 'x.key') }],
    })
    expect(config.stateFile).toBe(join(dir, 'data/registry.json'))
    expect(config.admin.tokenFile).toBe(join(dir, 'secret/token'))
    expect(config.accessLog.path).toBe(join(dir, 'logs/access.log'))
  })

  it('returns a deep-frozen config', async () => {
    const { config } = await loadConfigFile(await writeConfig({}))
    expect(Object.isFrozen(config)).toBe(true)
    expect(Object.isFrozen(config.timeouts)).toBe(true)
    expect(Object.isFrozen(config.listeners[0])).toBe(true)
    expect(Object.isFrozen(config.upstreams.master.targets)).toBe(true)
    expect(() => { (config.timeouts as { connectMs: number }).connectMs = 1 }).toThrow(TypeError)
  })

  it('lists every validation problem with its path', async () => {
    const issues = await issuesOf(await writeConfig({ listeners: [{ name: 'a', port: 'eighty' }], workers: 0 }))
    expect(issues.map((i) => i.path)).toEqual(['listeners[0].port', 'workers'])
  })

  it('reports a JSON syntax error with its line and column', async () => {
    const issues = await issuesOf(await writeConfig('{\n  "workers": 1\n  "stateFile": "x"\n}\n'))
    expect(issues).toEqual([{ path: '', message: expect.stringContaining('line 3, column 3') }])
  })

  it('reports a duplicate key at its path', async () => {
    const issues = await issuesOf(await writeConfig('{ "admin": { "port": 1,\n "port": 2 } }'))
    expect(issues).toEqual([{ path: 'admin.port', message: expect.stringContaining('line 2, column 2') }])
  })

  it('reports a missing file', async () => {
    const issues = await issuesOf(join(dir, 'absent.json'))
    expect(issues).toEqual([{ path: '', message: expect.stringContaining('no such file') }])
  })

  it('loads the embedded default config with the default values', async () => {
    const { config, baseDir } = await loadConfigFile(DEFAULT_CONFIG_FILE)
    expect(baseDir).toBe(resolve(repoRoot))
    expect(config.listeners[2].tls?.cert).toBe(join(repoRoot, 'certs/gateway.crt'))
    expect({ ...config, listeners: DEFAULTS.listeners, stateFile: DEFAULTS.stateFile }).toEqual(DEFAULTS)
  })
})

describe('the embedded gateway.config.json', () => {
  it('sits at the repository root', () => {
    expect(DEFAULT_CONFIG_FILE).toBe(join(repoRoot, 'gateway.config.json'))
  })

  it('spells out exactly the defaults', async () => {
    expect(JSON.parse(await readFile(DEFAULT_CONFIG_FILE, 'utf8'))).toEqual(DEFAULTS)
  })
})

describe('parseConfig', () => {
  it('replaces default listeners, routes and upstreams instead of merging them', () => {
    const result = parseConfig({
      listeners: [{ name: 'only', port: 0 }],
      upstreams: { app: { targets: ['a:1'] } },
      routes: [{ id: 'all', upstream: 'app' }],
    }, dir)
    if (!('config' in result)) throw new Error(JSON.stringify(result.errors))
    expect(result.config.listeners).toEqual([{ name: 'only', port: 0, host: '0.0.0.0', workspacesOnly: false }])
    expect(result.config.upstreams).toEqual({ app: { targets: ['a:1'], maxFails: 3, cooldownMs: 10000, balance: 'round-robin' } })
    expect(result.config.routes).toEqual([{ id: 'all', upstream: 'app', pathPrefix: '/' }])
  })

  it('merges objects key by key with the defaults', () => {
    const result = parseConfig({ timeouts: { connectMs: 5 }, workspaces: { registry: { cacheSize: 7 } } }, dir)
    if (!('config' in result)) throw new Error(JSON.stringify(result.errors))
    expect(result.config.timeouts).toEqual({ ...DEFAULTS.timeouts, connectMs: 5 })
    expect(result.config.workspaces.registry).toEqual({ ...DEFAULTS.workspaces.registry, cacheSize: 7 })
    expect(result.config.workspaces.stripCookies).toEqual(DEFAULTS.workspaces.stripCookies)
  })

  it('returns errors instead of a config when invalid', () => {
    expect(parseConfig({ limits: { maxConnections: 0 } }, dir)).toEqual({
      errors: [{ path: 'limits.maxConnections', message: expect.any(String) }],
    })
  })

  it('leaves the raw input untouched', () => {
    const raw = { listeners: [{ name: 'a', port: 0, tls: { cert: 'a.crt', key: 'a.key' } }] }
    const copy = structuredClone(raw)
    parseConfig(raw, dir)
    expect(raw).toEqual(copy)
    expect(Object.isFrozen(raw.listeners[0])).toBe(false)
  })

  it('treats a "__proto__" key as an unknown key, not a prototype', () => {
    const raw = JSON.parse('{ "__proto__": { "workers": 99 } }')
    expect(parseConfig(raw, dir)).toEqual({ errors: [{ path: '__proto__', message: expect.stringContaining('unknown key') }] })
  })
})

describe('resolveConfigPath', () => {
  it('prefers --config, then GATEWAY_CONFIG, then the embedded file', () => {
    expect(resolveConfigPath('/a.json', { GATEWAY_CONFIG: '/b.json' })).toBe('/a.json')
    expect(resolveConfigPath(undefined, { GATEWAY_CONFIG: '/b.json' })).toBe('/b.json')
    expect(resolveConfigPath(undefined, {})).toBe(DEFAULT_CONFIG_FILE)
  })
})

describe('formatIssues', () => {
  it('prints FILE: path: message, or FILE: message for whole-file problems', () => {
    expect(formatIssues('g.json', [{ path: 'workers', message: 'bad' }, { path: '', message: 'unreadable' }]))
      .toEqual(['g.json: workers: bad', 'g.json: unreadable'])
  })
})
