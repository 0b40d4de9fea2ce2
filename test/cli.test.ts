import { execFile } from 'node:child_process'
import { X509Certificate } from 'node:crypto'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { COMPILED_CLI_DIR } from './helpers/compiled-cli.js'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { runCaptured, type Captured } from './helpers/run-cli.js'

const run = promisify(execFile)
const repoRoot = fileURLToPath(new URL('../', import.meta.url))

let dir: string
beforeEach(async () => { dir = await mkdtemp(join(tmpdir(), 'gw-cli-')) })
afterEach(async () => { await rm(dir, { recursive: true, force: true }) })

function cli(argv: string[], env: NodeJS.ProcessEnv = {}): Promise<Captured> {
  return runCaptured(argv, dir, env)
}

const bad = { listeners: [{ name: 'web', port: 'eighty' }], routes: [{ id: 'r', upstream: 'nowhere' }] }

describe('gateway check', () => {
  it('prints ok and exits 0 for a valid config', async () => {
    await writeFile(join(dir, 'good.json'), '{ "workers": 2 }')
    expect(await cli(['check', '--config', 'good.json'])).toEqual({ code: 0, out: ['ok: good.json'], err: [] })
  })

  it('prints every problem as FILE: path: message and exits 1', async () => {
    await writeFile(join(dir, 'bad.json'), JSON.stringify(bad))
    const result = await cli(['check', '--config=bad.json'])
    expect(result.code).toBe(1)
    expect(result.out).toEqual([])
    expect(result.err).toEqual([
      'bad.json: listeners[0].port: must be an integer from 0 to 65535, got "eighty"',
      expect.stringMatching(/^bad\.json: routes\[0\]\.upstream: .*"nowhere"/),
    ])
  })

  it('reads GATEWAY_CONFIG when --config is absent', async () => {
    await writeFile(join(dir, 'env.json'), '{}')
    expect((await cli(['check'], { GATEWAY_CONFIG: 'env.json' })).out).toEqual(['ok: env.json'])
  })

  it('reports a file that cannot be read', async () => {
    const result = await cli(['check', '--config', 'absent.json'])
    expect(result.code).toBe(1)
    expect(result.err).toEqual(['absent.json: cannot read the config file: no such file'])
  })
})

describe('gateway start', () => {
  it('exits 1 with the config problems before starting anything', async () => {
    await writeFile(join(dir, 'bad.json'), JSON.stringify(bad))
    const result = await cli(['start', '--config', 'bad.json'])
    expect(result.code).toBe(1)
    expect(result.err[0]).toMatch(/^bad\.json: listeners\[0\]\.port: /)
  })
})

describe('gateway certs', () => {
  it('writes a CA and a server certificate for the hosts and says where', async () => {
    const result = await cli(['certs', '--out', 'tls', '--hosts', 'gw.example.com, *.ws.example.com,127.0.0.1'])
    expect(result.code).toBe(0)
    expect(result.out.map((line) => line.split(' ')[1])).toEqual(['tls/ca.crt', 'tls/ca.key', 'tls/gateway.crt', 'tls/gateway.key'])
    const cert = new X509Certificate(await readFile(join(dir, 'tls/gateway.crt')))
    expect(cert.subjectAltName).toBe('DNS:gw.example.com, DNS:*.ws.example.com, IP Address:127.0.0.1')
  })

  it('exits 2 when --out or --hosts is missing', async () => {
    expect((await cli(['certs', '--hosts', 'a'])).code).toBe(2)
    expect((await cli(['certs', '--out', 'x'])).code).toBe(2)
    expect((await cli(['certs', '--out', 'x', '--hosts', ' , '])).code).toBe(2)
  })

  it('exits 1 naming a host that cannot go in a certificate', async () => {
    const result = await cli(['certs', '--out', 'x', '--hosts', 'bad host'])
    expect(result.code).toBe(1)
    expect(result.err[0]).toContain('"bad host"')
  })
})

describe('command line errors', () => {
  it('exits 2 on an unknown command', async () => {
    const result = await cli(['serve'])
    expect(result.code).toBe(2)
    expect(result.err[0]).toContain('unknown command "serve"')
  })

  it('exits 2 on an unknown option', async () => {
    const result = await cli(['check', '--confg', 'x.json'])
    expect(result.code).toBe(2)
    expect(result.err[0]).toContain('unknown option "--confg"')
  })

  it('exits 2 when an option lacks its value or a stray argument is given', async () => {
    expect((await cli(['check', '--config'])).code).toBe(2)
    expect((await cli(['check', 'gateway.json'])).code).toBe(2)
  })

  it('exits 2 with usage when no command is given', async () => {
    const result = await cli([])
    expect(result.code).toBe(2)
    expect(result.err[0]).toContain('usage: gateway <command>')
  })

  it('prints help and exits 0', async () => {
    const general = await cli(['--help'])
    expect(general.code).toBe(0)
    expect(general.out[0]).toMatch(/start[\s\S]*check[\s\S]*certs/)
    const certs = await cli(['certs', '--help'])
    expect(certs.code).toBe(0)
    expect(certs.out[0]).toContain('--hosts')
  })
})

describe('the compiled gateway command', () => {
  // Compiled next to src/ and dist/ (one folder under the root), so the embedded config is
  // found the way dist/cli.js finds it.
  // Compiled once for the whole run by test/global-setup.ts.
  const build = COMPILED_CLI_DIR

  async function gateway(args: string[], env: NodeJS.ProcessEnv = {}) {
    const { GATEWAY_CONFIG: _, ...inherited } = process.env
    return run(process.execPath, [join(build, 'cli.js'), ...args], { cwd: dir, env: { ...inherited, ...env } })
      .then(({ stdout, stderr }) => ({ code: 0, stdout, stderr }))
      .catch((err: { code: number; stdout: string; stderr: string }) => ({ code: err.code, stdout: err.stdout, stderr: err.stderr }))
  }

  it('starts with a shebang', async () => {
    expect((await readFile(join(build, 'cli.js'), 'utf8')).startsWith('#!/usr/bin/env node\n')).toBe(true)
  })

  it('checks the embedded gateway.config.json when given no config', async () => {
    const result = await gateway(['check'])
    expect(result).toEqual({ code: 0, stdout: `ok: ${join(repoRoot, 'gateway.config.json')}\n`, stderr: '' })
  })

  it('exits 1 and prints the problems for an invalid config', async () => {
    await writeFile(join(dir, 'bad.json'), JSON.stringify(bad))
    const result = await gateway(['check'], { GATEWAY_CONFIG: join(dir, 'bad.json') })
    expect(result.code).toBe(1)
    expect(result.stderr).toContain('bad.json: listeners[0].port: must be an integer from 0 to 65535, got "eighty"\n')
  })

  it('exits 2 on an unknown command', async () => {
    expect((await gateway(['nope'])).code).toBe(2)
  })
})
