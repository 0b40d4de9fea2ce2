// Starts a real gateway on port 0 from a partial config, in a temp folder of its own.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { loadConfigFile } from '../../src/config/load.js'
import { Gateway } from '../../src/gateway.js'

export interface TestGateway {
  gw: Gateway
  dir: string
  configFile: string
  /** Port of a listener by name ("http" by default). */
  port(name?: string): number
  close(): Promise<void>
}

/** `config` is merged over a one-listener config: { listeners: [{ name: "http", port: 0 }] }. */
export async function startGateway(config: Record<string, unknown> = {}): Promise<TestGateway> {
  const dir = mkdtempSync(join(tmpdir(), 'gw-test-'))
  const full = {
    listeners: [{ name: 'http', port: 0, host: '127.0.0.1' }],
    admin: { host: '127.0.0.1', port: 0, token: 'test-admin-token' },
    stateFile: join(dir, 'state.json'),
    ...config,
  }
  const configFile = join(dir, 'gateway.json')
  writeFileSync(configFile, JSON.stringify(full, null, 2))
  const gw = await Gateway.start(await loadConfigFile(configFile), { log: () => {} })
  return {
    gw,
    dir,
    configFile,
    port: (name = 'http') => gw.addresses()[name].port,
    async close() {
      await gw.close()
      rmSync(dir, { recursive: true, force: true })
    },
  }
}
