// load -> apply defaults -> validate -> resolve file paths -> freeze. The same path runs at
// start, on SIGHUP and on POST /reload; a config that fails any step never replaces the
// running one.

import { dirname, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { applyDefaults, deepFreeze } from './defaults.js'
import { readFromDisk, type FileReader } from './file-snapshot.js'
import { parseJsonBytes } from './parse-json.js'
import type { ConfigIssue, GatewayConfig } from './types.js'
import { validateConfig } from './validate.js'

export type { ConfigIssue }

export interface LoadedConfig {
  readonly config: GatewayConfig
  /** Absolute path of the file it came from. */
  readonly file: string
  /** The file's folder: relative paths in the config were resolved against it. */
  readonly baseDir: string
}

export class ConfigError extends Error {
  constructor(readonly file: string, readonly issues: readonly ConfigIssue[]) {
    super(formatIssues(file, issues).join('\n'))
    this.name = 'ConfigError'
  }
}

/**
 * The embedded default config at the repository root. This module sits two folders below the
 * root in both layouts (src/config/load.ts, dist/config/load.js).
 */
export const DEFAULT_CONFIG_FILE = fileURLToPath(new URL('../../gateway.config.json', import.meta.url))

/** `--config FILE`, else GATEWAY_CONFIG, else the embedded default config. */
export function resolveConfigPath(flag?: string, env: NodeJS.ProcessEnv = process.env): string {
  if (flag) return resolve(flag)
  if (env.GATEWAY_CONFIG) return resolve(env.GATEWAY_CONFIG)
  return DEFAULT_CONFIG_FILE
}

/**
 * Reads (through `read`: a reload's snapshot, else the disk), checks and freezes a config file;
 * throws ConfigError listing every problem.
 */
export async function loadConfigFile(file: string, read: FileReader = readFromDisk): Promise<LoadedConfig> {
  const absolute = resolve(file)
  let bytes: Buffer
  try {
    bytes = await read(absolute)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    const reason = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : (err as Error).message
    throw new ConfigError(absolute, [{ path: '', message: `cannot read the config file: ${reason}` }])
  }
  const parsed = parseJsonBytes(bytes)
  if (!parsed.ok) throw new ConfigError(absolute, [parsed.issue])
  const baseDir = dirname(absolute)
  const result = parseConfig(parsed.value, baseDir)
  if ('errors' in result) throw new ConfigError(absolute, result.errors)
  return { config: result.config, file: absolute, baseDir }
}

/**
 * A parsed JSON value turned into the config the gateway runs on: defaults applied, checked,
 * relative file paths resolved against `baseDir`, deep-frozen. `raw` is not modified.
 */
export function parseConfig(raw: unknown, baseDir: string): { config: GatewayConfig } | { errors: ConfigIssue[] } {
  const merged = applyDefaults(raw)
  const errors = validateConfig(merged)
  if (errors.length > 0) return { errors }
  // Validated: the shape is GatewayConfig. Cloned so freezing never reaches the caller's objects.
  const config = structuredClone(merged) as Mutable<GatewayConfig>
  const at = (file: string): string => resolve(baseDir, file)
  for (const listener of config.listeners as Mutable<GatewayConfig['listeners'][number]>[]) {
    if (!listener.tls) continue
    const tls = listener.tls as Mutable<NonNullable<typeof listener.tls>>
    tls.cert = at(tls.cert)
    tls.key = at(tls.key)
    tls.sni = tls.sni?.map((entry) => ({ ...entry, cert: at(entry.cert), key: at(entry.key) }))
    if (tls.sni === undefined) delete tls.sni
  }
  for (const up of Object.values(config.upstreams) as Mutable<GatewayConfig['upstreams'][string]>[]) {
    if (typeof up.errorPage === 'string') up.errorPage = at(up.errorPage)
  }
  config.stateFile = at(config.stateFile)
  const admin = config.admin as Mutable<GatewayConfig['admin']>
  if (admin.tokenFile !== null) admin.tokenFile = at(admin.tokenFile)
  const accessLog = config.accessLog as Mutable<GatewayConfig['accessLog']>
  if (accessLog.path !== null) accessLog.path = at(accessLog.path)
  return { config: deepFreeze(config) }
}

/** `FILE: path: message` lines (`FILE: message` for whole-file problems), as `gateway check` prints them. */
export function formatIssues(file: string, issues: readonly ConfigIssue[]): string[] {
  return issues.map((issue) => issue.path === '' ? `${file}: ${issue.message}` : `${file}: ${issue.path}: ${issue.message}`)
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] }
