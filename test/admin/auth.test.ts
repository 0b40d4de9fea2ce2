import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { loadConfigFile } from '../../src/config/load.js'
import { Gateway } from '../../src/gateway.js'
import { StartupError } from '../../src/listeners/startup-error.js'
import { startGateway, type TestGateway } from '../helpers/gateway.js'
import { admin, TOKEN } from './admin-client.js'

let gw: TestGateway | null = null
const others: Gateway[] = []
const dirs: string[] = []
afterEach(async () => {
  await gw?.close()
  gw = null
  for (const g of others.splice(0)) await g.close()
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true })
})

/** Starts a gateway straight from a config object, with its own env and log. */
async function startRaw(config: Record<string, unknown>, env: NodeJS.ProcessEnv = {}): Promise<{ gateway: Gateway; dir: string; log: string[] }> {
  const dir = mkdtempSync(join(tmpdir(), 'gw-admin-'))
  dirs.push(dir)
  const file = join(dir, 'gateway.json')
  writeFileSync(file, JSON.stringify({ listeners: [{ name: 'http', port: 0, host: '127.0.0.1' }], stateFile: join(dir, 'state', 'state.json'), ...config }))
  const log: string[] = []
  const gateway = await Gateway.start(await loadConfigFile(file), { log: (m, f) => log.push(f ? `${m} ${JSON.stringify(f)}` : m), env })
  others.push(gateway)
  return { gateway, dir, log }
}

describe('admin authentication', () => {
  it('answers 401 without a token and with a wrong one, 200 with the right one', async () => {
    gw = await startGateway()
    const missing = await admin(gw, 'GET', '/routes', { token: null })
    expect(missing.status).toBe(401)
    expect(missing.headers['www-authenticate']).toMatch(/^Bearer/)
    expect(missing.json.errors[0].path).toBe('Authorization')
    expect((await admin(gw, 'GET', '/routes', { token: 'wrong' })).status).toBe(401)
    expect((await admin(gw, 'GET', '/routes', { token: `${TOKEN}x` })).status).toBe(401)
    expect((await admin(gw, 'GET', '/routes', { headers: { authorization: `Basic ${TOKEN}` }, token: null })).status).toBe(401)
    expect((await admin(gw, 'GET', '/metrics', { token: null })).status).toBe(401)
    expect((await admin(gw, 'POST', '/reload', { token: null })).status).toBe(401)
    expect((await admin(gw, 'GET', '/routes')).status).toBe(200)
  })

  it('keeps /healthz and /readyz open', async () => {
    gw = await startGateway()
    expect((await admin(gw, 'GET', '/healthz', { token: null })).status).toBe(200)
    const ready = await admin(gw, 'GET', '/readyz', { token: null })
    expect(ready.status).toBe(200)
    expect(ready.json.ready).toBe(true)
  })

  it('refuses a request whose Host is not the admin address (DNS rebinding), even with the token', async () => {
    gw = await startGateway()
    const port = gw.gw.addresses().admin.port
    const evil = await admin(gw, 'GET', '/routes', { headers: { host: `evil.example.com:${port}` } })
    expect(evil.status).toBe(403)
    expect(evil.json.errors[0].path).toBe('Host')
    expect((await admin(gw, 'GET', '/routes', { headers: { host: '127.0.0.1:1' } })).status).toBe(403)
    for (const host of [`127.0.0.1:${port}`, `localhost:${port}`, `LOCALHOST:${port}`, `[::1]:${port}`]) {
      expect((await admin(gw, 'GET', '/routes', { headers: { host } })).status, host).toBe(200)
    }
  })

  it('changes nothing through GET: mutations need PUT, POST or DELETE (405 with Allow)', async () => {
    gw = await startGateway()
    const reload = await admin(gw, 'GET', '/reload')
    expect(reload.status).toBe(405)
    expect(reload.headers.allow).toBe('POST')
    const purge = await admin(gw, 'GET', '/cache/purge')
    expect(purge.status).toBe(405)
    const routes = await admin(gw, 'POST', '/routes', { body: { routes: [] } })
    expect(routes.status).toBe(405)
    expect(routes.headers.allow).toBe('GET, HEAD, PUT')
    expect((await admin(gw, 'DELETE', '/metrics')).status).toBe(405)
    expect((await admin(gw, 'GET', '/nothing-here')).status).toBe(404)
  })

  it('generates a token when none is configured, stores it mode 0600 beside the state file and logs only the path', async () => {
    const { gateway, dir, log } = await startRaw({ admin: { host: '127.0.0.1', port: 0 } })
    const file = join(dir, 'state', 'admin.token')
    const token = readFileSync(file, 'utf8').trim()
    expect(token.length).toBeGreaterThanOrEqual(40)
    expect(statSync(file).mode & 0o777).toBe(0o600)
    expect(log.join('\n')).toContain(file)
    expect(log.join('\n')).not.toContain(token)
    const port = gateway.addresses().admin.port
    expect((await admin(port, 'GET', '/routes', { token })).status).toBe(200)
    expect((await admin(port, 'GET', '/routes')).status).toBe(401)
    // a restart keeps the stored token
    await gateway.close()
    const again = await Gateway.start(await loadConfigFile(join(dir, 'gateway.json')), { log: () => {}, env: {} })
    others.push(again)
    expect((await admin(again.addresses().admin.port, 'GET', '/routes', { token })).status).toBe(200)
  })

  it('takes the token from GATEWAY_ADMIN_TOKEN, and from admin.tokenFile', async () => {
    const fromEnv = await startRaw({ admin: { host: '127.0.0.1', port: 0 } }, { GATEWAY_ADMIN_TOKEN: 'env-token-1' })
    expect((await admin(fromEnv.gateway.addresses().admin.port, 'GET', '/routes', { token: 'env-token-1' })).status).toBe(200)
    const dir = mkdtempSync(join(tmpdir(), 'gw-token-'))
    dirs.push(dir)
    writeFileSync(join(dir, 'token'), 'file-token-2\n')
    const fromFile = await startRaw({ admin: { host: '127.0.0.1', port: 0, tokenFile: join(dir, 'token') } })
    expect((await admin(fromFile.gateway.addresses().admin.port, 'GET', '/routes', { token: 'file-token-2' })).status).toBe(200)
  })

  it('refuses to start with the admin listener beyond loopback and no configured token', async () => {
    const err = await startRaw({ admin: { host: '0.0.0.0', port: 0 } }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(StartupError)
    expect((err as Error).message).toMatch(/beyond loopback/)
    expect((err as Error).message).toMatch(/admin\.token/)
  })

  it('answers bad JSON with 400 and the errors shape, and an oversized body with 413', async () => {
    gw = await startGateway()
    const bad = await admin(gw, 'PUT', '/routes', { raw: '{"routes": [' })
    expect(bad.status).toBe(400)
    expect(bad.json.errors).toEqual([{ path: '', message: expect.stringMatching(/not valid JSON/) }])
    const huge = await admin(gw, 'PUT', '/routes', { raw: `{"routes": [], "pad": "${'x'.repeat(5 * 1024 * 1024)}"}` }).catch((e: unknown) => e)
    // the gateway answers 413 and closes; a client still sending may see the reset instead
    if (!(huge instanceof Error)) expect((huge as { status: number }).status).toBe(413)
  })
})
