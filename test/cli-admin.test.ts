import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { COMPILED_CLI_DIR } from './helpers/compiled-cli.js'
import type http from 'node:http'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { loadConfigFile } from '../src/config/load.js'
import { Gateway } from '../src/gateway.js'
import { startGateway, type TestGateway } from './helpers/gateway.js'
import { httpUpstream, type TestServer, freePort } from './helpers/upstream.js'
import { runCaptured, type Captured } from './helpers/run-cli.js'

const run = promisify(execFile)
const repoRoot = fileURLToPath(new URL('../', import.meta.url))

let dir: string
let gw: TestGateway | null = null
let up: TestServer<http.Server> | null = null
const others: Gateway[] = []
beforeEach(async () => { dir = await mkdtemp(join(tmpdir(), 'gw-cli-admin-')) })
afterEach(async () => {
  for (const g of others.splice(0)) await g.close()
  await gw?.close()
  await up?.close()
  gw = null
  up = null
  await rm(dir, { recursive: true, force: true })
})

function cli(argv: string[], env: NodeJS.ProcessEnv = {}): Promise<Captured> {
  return runCaptured(argv, dir, env)
}

/** A gateway, and a config file for the CLI that names its admin listener's real port. */
async function gatewayAndConfig(): Promise<string> {
  up = await httpUpstream((_req, res) => res.end('up'))
  gw = await startGateway({ upstreams: { master: { targets: [up.target] } }, routes: [{ id: 'master', pathPrefix: '/', upstream: 'master' }] })
  const config = JSON.parse(await readFile(gw.configFile, 'utf8')) as Record<string, unknown>
  const file = join(dir, 'operator.json')
  await writeFile(file, JSON.stringify({ ...config, admin: { ...(config.admin as object), port: gw.gw.addresses().admin.port } }))
  return 'operator.json'
}

describe('gateway routes', () => {
  it('applies a file, lists the routes and removes one', async () => {
    const config = await gatewayAndConfig()
    await writeFile(join(dir, 'routes.json'), JSON.stringify({ routes: [{ id: 'api', pathPrefix: '/api', targets: [up!.target], allowHttp: true }, { id: 'ide', host: 'ide.example.com', upstream: 'master' }] }))
    const applied = await cli(['routes', 'apply', 'routes.json', '--config', config])
    expect(applied).toMatchObject({ code: 0, err: [] })
    expect(applied.out[0]).toMatch(/^applied 2 admin routes from routes\.json \(routes version \d+\)$/)

    const list = await cli(['routes', 'list', '--config', config])
    expect(list.code).toBe(0)
    expect(list.out[0]).toMatch(/^routes version \d+$/)
    expect(list.out[1]).toMatch(/^ID\s+SOURCE\s+HOST\s+PATH\s+TO$/)
    expect(list.out.slice(2).map((l) => l.split(/\s+/).slice(0, 4))).toEqual([
      ['master', 'config', '*', '/'],
      ['api', 'admin', '*', '/api'],
      ['ide', 'admin', 'ide.example.com', '/'],
    ])
    expect(list.out[3]).toMatch(/ \(allowHttp\)$/)
    expect(list.out[4]).not.toContain('allowHttp')
    const json = await cli(['routes', 'list', '--json', '--config', config])
    expect(JSON.parse(json.out.join('\n')).routes).toHaveLength(3)

    const removed = await cli(['routes', 'rm', 'api', '--config', config])
    expect(removed.code).toBe(0)
    expect(removed.out[0]).toMatch(/^removed route api/)
    expect((await cli(['routes', 'list', '--config', config])).out).toHaveLength(4)
  })

  it('exits 1 with the server\'s error lines, prefixed with the file, for an invalid file', async () => {
    const config = await gatewayAndConfig()
    await writeFile(join(dir, 'bad.json'), JSON.stringify([{ id: 'm', pathPrefix: '/m', targets: ['169.254.169.254:80'] }]))
    const result = await cli(['routes', 'apply', 'bad.json', '--config', config])
    expect(result.code).toBe(1)
    expect(result.out).toEqual([])
    expect(result.err[0]).toMatch(/^error: PUT \/routes failed with 400/)
    expect(result.err[1]).toMatch(/^ {2}bad\.json: routes\[0\]\.targets\[0\]: must not be a link-local/)
  })

  it('exits 1 naming the byte, without calling the gateway, for a file that is not UTF-8', async () => {
    const config = await gatewayAndConfig()
    const route = Buffer.from(JSON.stringify([{ id: 'caf\u00e9', pathPrefix: '/m', targets: ['127.0.0.1:9'] }]), 'latin1')
    await writeFile(join(dir, 'latin1.json'), route)
    const result = await cli(['routes', 'apply', 'latin1.json', '--config', config])
    expect(result.code).toBe(1)
    expect(result.err.join('\n')).toMatch(/latin1\.json: .*byte 0xe9 is not UTF-8 text/)
    expect((await cli(['routes', 'list', '--config', config])).out.join('\n')).not.toMatch(/caf/)
  })

  it('exits 1 when removing a config route or an unknown one', async () => {
    const config = await gatewayAndConfig()
    const configRoute = await cli(['routes', 'rm', 'master', '--config', config])
    expect(configRoute.code).toBe(1)
    expect(configRoute.err.join('\n')).toMatch(/409[\s\S]*config route/)
    expect((await cli(['routes', 'rm', 'nope', '--config', config])).code).toBe(1)
  })

  it('exits 2 on a wrong command line', async () => {
    expect((await cli(['routes'])).code).toBe(2)
    expect((await cli(['routes', 'apply'])).code).toBe(2)
    expect((await cli(['routes', 'list', 'extra'])).code).toBe(2)
    expect((await cli(['routes', 'frob'])).code).toBe(2)
    expect((await cli(['servers', 'put', 'k'])).code).toBe(2)
  })

  it('says it cannot reach the admin API when the gateway is not running', async () => {
    const port = await freePort()
    await writeFile(join(dir, 'down.json'), JSON.stringify({ admin: { host: '127.0.0.1', port, token: 't' }, stateFile: join(dir, 'state.json') }))
    const result = await cli(['routes', 'list', '--config', 'down.json'])
    expect(result.code).toBe(1)
    expect(result.err[0]).toMatch(/cannot reach the admin API at http:\/\/127\.0\.0\.1:\d+: ECONNREFUSED/)
  })
})

describe('gateway servers', () => {
  it('puts, lists and removes workspace servers', async () => {
    const config = await gatewayAndConfig()
    const put = await cli(['servers', 'put', '32770_node1', 'node1:32770', '--workspace', 'w1', '--server', 'wsagent', '--config', config])
    expect(put).toEqual({ code: 0, out: ['put server 32770_node1 -> node1:32770'], err: [] })
    const list = await cli(['servers', 'list', '--config', config])
    expect(list.out[0]).toMatch(/^registry version \d+, 1 servers$/)
    expect(list.out[2].split(/\s+/)).toEqual(['32770_node1', 'node1:32770', 'w1', 'wsagent'])
    expect((await cli(['servers', 'rm', '32770_node1', '--config', config])).code).toBe(0)
    expect((await cli(['servers', 'rm', '32770_node1', '--config', config])).code).toBe(1)
    const bad = await cli(['servers', 'put', '32770_node1', 'no-port', '--config', config])
    expect(bad.code).toBe(1)
    expect(bad.err[1]).toMatch(/target/)
  })
})

describe('gateway reload', () => {
  it('reloads, and prints the problems of an invalid config with its path', async () => {
    const config = await gatewayAndConfig()
    const ok = await cli(['reload', '--config', config])
    expect(ok.code).toBe(0)
    expect(ok.out[0]).toMatch(/^reloaded \(routes version \d+\)$/)
    const running = JSON.parse(await readFile(gw!.configFile, 'utf8')) as Record<string, unknown>
    await writeFile(gw!.configFile, JSON.stringify({ ...running, routes: [{ id: 'master', upstream: 'gone' }] }))
    const bad = await cli(['reload', '--config', config])
    expect(bad.code).toBe(1)
    expect(bad.err.join('\n')).toContain('routes[0].upstream')
  })
})

describe('the admin token', () => {
  it('is read from the file the gateway generated beside the state file', async () => {
    const stateFile = join(dir, 'state', 'state.json')
    await writeFile(join(dir, 'gw.json'), JSON.stringify({ listeners: [{ name: 'http', port: 0, host: '127.0.0.1' }], admin: { host: '127.0.0.1', port: 0 }, stateFile }))
    const g = await Gateway.start(await loadConfigFile(join(dir, 'gw.json')), { log: () => {}, env: {} })
    others.push(g)
    await writeFile(join(dir, 'op.json'), JSON.stringify({ admin: { host: '127.0.0.1', port: g.addresses().admin.port }, stateFile }))
    const list = await cli(['routes', 'list', '--config', 'op.json'])
    expect(list.code).toBe(0)
    // GATEWAY_ADMIN_TOKEN wins over the stored file, as in the gateway
    const wrong = await cli(['routes', 'list', '--config', 'op.json'], { GATEWAY_ADMIN_TOKEN: 'not-it' })
    expect(wrong.code).toBe(1)
    expect(wrong.err.join('\n')).toMatch(/401[\s\S]*token is wrong/)
  })

  it('exits 1 naming the missing token when none is configured or stored', async () => {
    await writeFile(join(dir, 'none.json'), JSON.stringify({ admin: { host: '127.0.0.1', port: 9 }, stateFile: join(dir, 's', 'state.json') }))
    const result = await cli(['routes', 'list', '--config', 'none.json'])
    expect(result.code).toBe(1)
    expect(result.err[0]).toMatch(/^none\.json: admin: no admin token configured/)
  })
})

describe('signals to the compiled gateway', () => {
  let child: ChildProcess | null = null

  // Compiled once for the whole run by test/global-setup.ts.
  const build = COMPILED_CLI_DIR
  afterEach(async () => {
    if (child !== null && child.exitCode === null) {
      child.kill('SIGKILL')
      await once(child, 'exit')
    }
    child = null
  })

  it('reopens the access log on SIGUSR1, reloads on SIGHUP and drains on SIGTERM', async () => {
    up = await httpUpstream((_req, res) => res.end('up'))
    const [port, adminPort] = [await freePort(), await freePort()]
    const log = join(dir, 'access.log')
    const configFile = join(dir, 'gw.json')
    const config = {
      listeners: [{ name: 'http', port, host: '127.0.0.1' }],
      admin: { host: '127.0.0.1', port: adminPort, token: 'sig-token' },
      upstreams: { master: { targets: [up.target] } },
      routes: [{ id: 'master', pathPrefix: '/', upstream: 'master' }],
      stateFile: join(dir, 'state.json'),
      accessLog: { enabled: true, path: log },
    }
    await writeFile(configFile, JSON.stringify(config))
    const c = spawn(process.execPath, [join(build, 'cli.js'), 'start', '--config', configFile], { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] })
    child = c
    let stderr = ''
    c.stderr!.on('data', (d: Buffer) => { stderr += d.toString() })
    await until(() => stderr.includes('admin token'), () => stderr)

    const get = async (path: string): Promise<number> => (await fetch(`http://127.0.0.1:${port}${path}`)).status
    expect(await get('/one')).toBe(200)
    await until(async () => (await readFile(log, 'utf8').catch(() => '')).includes('/one'), () => stderr)
    await rename(log, `${log}.1`)
    c.kill('SIGUSR1')
    // the reopen happens with the next batch; a request makes one
    await until(async () => {
      await get('/two')
      return (await readFile(log, 'utf8').catch(() => '')).includes('/two')
    }, () => stderr)
    expect(await readFile(`${log}.1`, 'utf8')).toContain('/one')

    await writeFile(configFile, JSON.stringify({ ...config, routes: [{ id: 'master', pathPrefix: '/', upstream: 'nope' }] }))
    c.kill('SIGHUP')
    await until(() => stderr.includes('SIGHUP: reload rejected'), () => stderr)
    expect(stderr).toContain('routes[0].upstream')
    expect(await get('/three')).toBe(200)

    c.kill('SIGTERM')
    const [code] = await once(c, 'exit') as [number]
    expect(code).toBe(0)
  }, 30_000)
})

async function until(check: () => boolean | Promise<boolean>, context: () => string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out; stderr so far:\n${context()}`)
    await new Promise((r) => setTimeout(r, 25))
  }
}
