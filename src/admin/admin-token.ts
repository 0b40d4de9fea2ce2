// Where the admin bearer token comes from, in order (config/defaults.ts, `admin.token`):
// `admin.token`, then GATEWAY_ADMIN_TOKEN, then the first line of `admin.tokenFile`, then a
// random token the gateway makes once and keeps (mode 0600) in `admin.token` beside the state
// file, so a restart and the operator CLI find the same one. The token itself is never logged
// and never returned by the API; only the file that holds it is named.
//
// The same resolution serves the gateway (start, reload) and the CLI (which only reads).

import { randomBytes } from 'node:crypto'
import { chmod, readFile, stat } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { isIPv4, isIPv6 } from 'node:net'
import type { AdminConfig, ConfigIssue } from '../config/types.js'
import { writeAtomic } from '../registry/registry-store.js'

export type TokenSource = 'config' | 'env' | 'tokenFile' | 'generated'

export interface AdminToken {
  readonly token: string
  readonly source: TokenSource
  /** The file it was read from or stored in (tokenFile, generated); null otherwise. */
  readonly file: string | null
  /** A generated token was written now (first start). */
  readonly created: boolean
}

export const ENV_TOKEN = 'GATEWAY_ADMIN_TOKEN'
/** Name of the generated token's file, in the state file's folder. */
export const GENERATED_TOKEN_FILE = 'admin.token'
/** Generated tokens: 32 random bytes, base64url (43 characters). */
const TOKEN_BYTES = 32
// Sent in an Authorization header: printable ASCII without spaces (config/validate.ts checks
// `admin.token` the same way).
const TOKEN_SHAPE = /^[\x21-\x7e]+$/

export function generatedTokenFile(stateFile: string): string {
  return join(dirname(stateFile), GENERATED_TOKEN_FILE)
}

/**
 * The token the admin API checks. `generate`: make and store one when none is configured
 * (the gateway); otherwise only read an already stored one (the CLI). Problems come back as
 * issues naming the config key or variable.
 */
export async function resolveAdminToken(
  admin: AdminConfig, stateFile: string, env: NodeJS.ProcessEnv, options: { generate: boolean },
): Promise<AdminToken | ConfigIssue[]> {
  if (admin.token !== null) return { token: admin.token, source: 'config', file: null, created: false }
  const fromEnv = env[ENV_TOKEN]
  if (fromEnv !== undefined && fromEnv !== '') {
    if (!TOKEN_SHAPE.test(fromEnv)) return [{ path: ENV_TOKEN, message: 'must be printable ASCII without spaces' }]
    return { token: fromEnv, source: 'env', file: null, created: false }
  }
  if (admin.tokenFile !== null) {
    const token = await readTokenFile(admin.tokenFile, 'admin.tokenFile')
    return Array.isArray(token) ? token : { token, source: 'tokenFile', file: admin.tokenFile, created: false }
  }
  const file = generatedTokenFile(stateFile)
  let existing: string | ConfigIssue[] | null
  try {
    await stat(file)
    existing = await readTokenFile(file, 'admin')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') return [{ path: 'admin', message: `cannot read the stored admin token ${file}: ${describe(err)}` }]
    existing = null
  }
  if (Array.isArray(existing)) return existing
  if (existing !== null) {
    // A copied or restored file may have lost its mode; the token is a password.
    if (options.generate) await chmod(file, 0o600).catch(() => {})
    return { token: existing, source: 'generated', file, created: false }
  }
  if (!options.generate) {
    return [{ path: 'admin', message: `no admin token configured (admin.token, ${ENV_TOKEN}, admin.tokenFile) and none stored in ${file} yet (the gateway makes one on its first start)` }]
  }
  const token = randomBytes(TOKEN_BYTES).toString('base64url')
  try {
    await writeAtomic(file, `${token}\n`, 0o600)
  } catch (err) {
    return [{ path: 'admin', message: `cannot store a generated admin token in ${file}: ${describe(err)} (set admin.token, ${ENV_TOKEN} or admin.tokenFile)` }]
  }
  return { token, source: 'generated', file, created: true }
}

async function readTokenFile(file: string, path: string): Promise<string | ConfigIssue[]> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    return [{ path, message: `cannot read the admin token file ${file}: ${describe(err)}` }]
  }
  const token = text.split(/\r?\n/, 1)[0].trim()
  if (token === '') return [{ path, message: `the admin token file ${file} is empty` }]
  if (!TOKEN_SHAPE.test(token)) return [{ path, message: `the first line of ${file} must be printable ASCII without spaces` }]
  return token
}

/**
 * Loopback bind addresses: only processes on this machine can reach them, so a generated
 * token (readable by whoever can read the state folder) is enough there.
 */
export function isLoopbackHost(host: string): boolean {
  const h = host.toLowerCase()
  if (h === 'localhost' || h.endsWith('.localhost')) return true
  if (isIPv4(h)) return h.startsWith('127.')
  if (isIPv6(h)) return h === '::1' || /^::ffff:127\./.test(h)
  return false
}

function describe(err: unknown): string {
  const e = err as NodeJS.ErrnoException
  return e.code === 'ENOENT' ? 'no such file' : e.code === 'EACCES' ? 'permission denied' : e.message
}
