#!/usr/bin/env node
// The `gateway` command: argument parsing and wiring only. Each command is one entry of
// COMMANDS; the work happens in config/, listeners/ and gateway.ts.
//
// Exit codes: 0 success, 1 the command failed (invalid config, port in use, ...),
// 2 the command line itself is wrong (unknown command or option, missing value).

import { realpathSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { readFile } from 'node:fs/promises'
import { isAbsolute, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { AdminClient, errorLines, type AdminReply } from './admin/admin-client.js'
import { ConfigError, formatIssues, loadConfigFile, resolveConfigPath, type ConfigIssue, type LoadedConfig } from './config/load.js'
import { parseJsonBytes } from './config/parse-json.js'
import { createCertificates } from './listeners/certificate-authority.js'

export interface CliIo {
  readonly out: (line: string) => void
  readonly err: (line: string) => void
  readonly env: NodeJS.ProcessEnv
  readonly cwd: string
  /** Ends the process at once (a second SIGTERM while draining). */
  readonly exit: (code: number) => never
}

interface FlagSpec {
  /** Takes a value (`--config FILE`) or is a switch (`--help`). */
  readonly value?: string
  readonly help: string
}

interface ParsedArgs {
  readonly flags: Readonly<Record<string, string | true>>
  readonly positionals: readonly string[]
}

interface Command {
  readonly summary: string
  /** Positional arguments, as shown in usage ("ID", "FILE"); none when empty. */
  readonly args?: string
  readonly flags: Readonly<Record<string, FlagSpec>>
  run(args: ParsedArgs, io: CliIo): Promise<number>
}

/** What the signal handlers need of a running gateway: one process, or a primary and its workers. */
interface RunningGateway {
  drain(): Promise<void>
  /** A reload in turn with admin API route changes. */
  reload(): Promise<{ ok: boolean; errors?: ConfigIssue[]; warnings?: string[] }>
  reopenLogs(): void
}

const CONFIG_FLAG: FlagSpec = { value: 'FILE', help: 'config file (default: $GATEWAY_CONFIG, else the embedded gateway.config.json)' }
const JSON_FLAG: FlagSpec = { help: 'print the admin API answer as JSON' }

export const COMMANDS: Readonly<Record<string, Command>> = {
  start: {
    summary: 'run the gateway',
    flags: { config: CONFIG_FLAG },
    run: start,
  },
  check: {
    summary: 'validate a config file; print every problem with its JSON path',
    flags: { config: CONFIG_FLAG },
    run: check,
  },
  certs: {
    summary: 'write a CA and a server certificate and key signed by it',
    flags: {
      out: { value: 'DIR', help: 'folder for ca.crt, ca.key, gateway.crt, gateway.key (required)' },
      hosts: { value: 'A,B,...', help: 'comma-separated DNS names, *.wildcards and IP addresses (required)' },
      days: { value: 'N', help: 'server certificate lifetime in days (default 825)' },
    },
    run: certs,
  },
  routes: {
    summary: 'list, apply or remove routes through the admin API',
    args: 'list | apply FILE | rm ID',
    flags: { config: CONFIG_FLAG, json: JSON_FLAG },
    run: routesCommand,
  },
  servers: {
    summary: "list, put or remove the embedded registry's workspace servers",
    args: 'list | put KEY TARGET | rm KEY',
    flags: {
      config: CONFIG_FLAG,
      json: JSON_FLAG,
      workspace: { value: 'ID', help: 'workspace id of the server (servers put)' },
      server: { value: 'NAME', help: 'agent name, e.g. wsagent, terminal, exec-agent (servers put)' },
    },
    run: serversCommand,
  },
  reload: {
    summary: 'make the running gateway re-read its config file and certificates',
    flags: { config: CONFIG_FLAG },
    run: reloadCommand,
  },
}

async function start(args: ParsedArgs, io: CliIo): Promise<number> {
  const loaded = await loadOrReport(args, io)
  if (!loaded) return 1
  // Loaded on `start` only, so `check` and `certs` stay fast and never load the data path.
  const cluster = (await import('node:cluster')).default
  if (cluster.isWorker) {
    const { runWorker } = await import('./workers/worker.js')
    keepServingOnBugs(io)
    return runWorker(loaded, jsonLines(io))
  }
  const { Gateway } = await import('./gateway.js')
  const { startPrimary, workerCount } = await import('./workers/primary.js')
  const count = workerCount(loaded.config.workers, availableParallelism())
  let gateway: RunningGateway
  try {
    if (count > 1) {
      const { gateway: primary, pool } = await startPrimary(loaded, count, jsonLines(io))
      gateway = {
        drain: async () => {
          await pool.stop(loaded.config.timeouts.shutdownGraceMs)
          await primary.close()
        },
        reload: () => primary.admin!.reload(),
        reopenLogs: () => {
          primary.observability?.reopenLogs()
          pool.reopenLogs()
        },
      }
    } else {
      const single = await Gateway.start(loaded)
      gateway = {
        drain: () => single.drain(),
        reload: () => (single.admin ?? single).reload(),
        reopenLogs: () => single.observability?.reopenLogs(),
      }
    }
  } catch (err) {
    io.err(`error: ${(err as Error).message}`)
    return 1
  }
  keepServingOnBugs(io)

  return new Promise<number>((done) => {
    let draining = false
    const stop = (signal: NodeJS.Signals): void => {
      if (draining) {
        io.err(`${signal} while draining: exiting now`)
        io.exit(1)
      }
      draining = true
      io.err(`${signal}: draining (a second signal exits at once)`)
      gateway.drain().then(() => {
        process.off('SIGHUP', reload)
        process.off('SIGUSR1', reopen)
        done(0)
      }, (err: unknown) => {
        io.err(`error: drain failed: ${(err as Error).message}`)
        done(1)
      })
    }
    const reload = (): void => {
      gateway.reload().then((result) => {
        if (result.ok) io.err(`SIGHUP: reloaded ${display(loaded.file, io)}${(result.warnings ?? []).map((w) => `; ${w}`).join('')}`)
        else for (const line of formatIssues(display(loaded.file, io), result.errors ?? [])) io.err(`SIGHUP: reload rejected: ${line}`)
      }, (err: unknown) => io.err(`SIGHUP: reload failed: ${(err as Error).message}`))
    }
    // Log rotation (logrotate: move the file, then send USR1), as nginx does.
    const reopen = (): void => gateway.reopenLogs()
    process.on('SIGTERM', stop)
    process.on('SIGINT', stop)
    process.on('SIGHUP', reload)
    process.on('SIGUSR1', reopen)
  })
}

/** Start-up lines and operational events as JSON lines on stderr, fields kept (as a single process logs them). */
function jsonLines(io: CliIo): (message: string, fields?: Record<string, unknown>) => void {
  return (message, fields) => io.err(JSON.stringify({ time: new Date().toISOString(), level: 'info', message, ...fields }))
}

/**
 * The last line of defence: an exception that escaped every handler is a bug in the gateway,
 * but ending the process would drop every user's connections for one request's sake. It is
 * logged loudly and counted (gateway_events_total{event="internal_error"}), and the gateway
 * keeps serving.
 */
function keepServingOnBugs(io: CliIo): void {
  const report = (kind: string) => (err: unknown): void => {
    io.err(`internal error (${kind}; a bug, please report it): ${err instanceof Error ? err.stack ?? err.message : String(err)}`)
    void import('./observability/channels.js').then(({ gatewayEvent }) => {
      if (gatewayEvent.hasSubscribers) gatewayEvent.publish({ event: 'internal_error', kind, message: err instanceof Error ? err.message : String(err) })
    })
  }
  process.on('uncaughtException', report('uncaught exception'))
  process.on('unhandledRejection', report('unhandled rejection'))
}

async function check(args: ParsedArgs, io: CliIo): Promise<number> {
  const loaded = await loadOrReport(args, io)
  if (!loaded) return 1
  io.out(`ok: ${display(loaded.file, io)}`)
  return 0
}

async function certs(args: ParsedArgs, io: CliIo): Promise<number> {
  const out = args.flags.out
  const hostList = args.flags.hosts
  if (typeof out !== 'string') return usageError('certs', 'missing --out DIR', io)
  if (typeof hostList !== 'string') return usageError('certs', 'missing --hosts A,B,...', io)
  const hosts = hostList.split(',').map((h) => h.trim()).filter((h) => h !== '')
  if (hosts.length === 0) return usageError('certs', '--hosts names no host', io)
  let days: number | undefined
  if (args.flags.days !== undefined) {
    days = Number(args.flags.days)
    if (!Number.isInteger(days) || days < 1) return usageError('certs', `--days must be a positive integer, got "${args.flags.days}"`, io)
  }
  try {
    const files = await createCertificates({ outDir: resolve(io.cwd, out), hosts, days })
    io.out(`wrote ${display(files.caCert, io)}  (CA certificate: install it where clients look for trusted CAs)`)
    io.out(`wrote ${display(files.caKey, io)}  (CA key, mode 0600: keep it private)`)
    io.out(`wrote ${display(files.cert, io)}  (server certificate for ${hosts.join(', ')})`)
    io.out(`wrote ${display(files.key, io)}  (server key, mode 0600)`)
    return 0
  } catch (err) {
    io.err(`error: ${(err as Error).message}`)
    return 1
  }
}

// ---------------------------------------------------------------------------------------------
// Operator commands over the admin API (admin address and token from the config)

async function routesCommand(args: ParsedArgs, io: CliIo): Promise<number> {
  const [action, arg, ...extra] = args.positionals
  const arity: Record<string, number> = { list: 0, apply: 1, rm: 1 }
  if (action === undefined || !Object.hasOwn(arity, action)) return usageError('routes', action === undefined ? 'missing action (list, apply or rm)' : `unknown action "${action}"`, io)
  if ((arg === undefined ? 0 : 1 + extra.length) !== arity[action]) return usageError('routes', `"routes ${action}" takes ${arity[action] === 0 ? 'no argument' : action === 'apply' ? 'one FILE' : 'one ID'}`, io)
  const admin = await adminFor(args, io)
  if (admin === null) return 1
  if (action === 'list') {
    return callAdmin(admin.client, io, 'GET', '/routes', undefined, (body) => {
      if (args.flags.json === true) return [JSON.stringify(body, null, 2)]
      const { version, routes } = body as { version: number; routes: { id: string; source: string; host?: string; pathPrefix: string; upstream?: string; targets?: string[]; allowHttp?: boolean }[] }
      return [`routes version ${version}`, ...table(['ID', 'SOURCE', 'HOST', 'PATH', 'TO'], routes.map((r) => [
        r.id, r.source, r.host ?? '*', r.pathPrefix,
        (r.upstream !== undefined ? `upstream ${r.upstream}` : (r.targets ?? []).join(', ')) + (r.allowHttp === true ? ' (allowHttp)' : ''),
      ]))]
    })
  }
  if (action === 'rm') {
    return callAdmin(admin.client, io, 'DELETE', `/routes/${encodeURIComponent(arg!)}`, undefined, (body) =>
      [`removed route ${arg} (routes version ${(body as { version: number }).version})`])
  }
  const file = resolve(io.cwd, arg!)
  let bytes: Buffer
  try {
    bytes = await readFile(file)
  } catch (err) {
    io.err(`${display(file, io)}: cannot read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
    return 1
  }
  const parsed = parseJsonBytes(bytes) // as the admin API reads it: UTF-8 only, no duplicate keys
  if (!parsed.ok) {
    for (const line of formatIssues(display(file, io), [parsed.issue])) io.err(line)
    return 1
  }
  // The file is the PUT /routes body, or just its array.
  const body = Array.isArray(parsed.value) ? { routes: parsed.value } : parsed.value
  return callAdmin(admin.client, io, 'PUT', '/routes', body, (reply) => {
    const { version, routes } = reply as { version: number; routes: { source: string }[] }
    return [`applied ${routes.filter((r) => r.source === 'admin').length} admin routes from ${display(file, io)} (routes version ${version})`]
  }, display(file, io))
}

async function serversCommand(args: ParsedArgs, io: CliIo): Promise<number> {
  const [action, ...rest] = args.positionals
  const arity: Record<string, number> = { list: 0, put: 2, rm: 1 }
  if (action === undefined || !Object.hasOwn(arity, action)) return usageError('servers', action === undefined ? 'missing action (list, put or rm)' : `unknown action "${action}"`, io)
  if (rest.length !== arity[action]) return usageError('servers', `"servers ${action}" takes ${['no argument', 'KEY', 'KEY TARGET'][arity[action]]}`, io)
  if (action !== 'put' && (args.flags.workspace !== undefined || args.flags.server !== undefined)) return usageError('servers', '--workspace and --server go with "servers put"', io)
  const admin = await adminFor(args, io)
  if (admin === null) return 1
  if (action === 'list') {
    return callAdmin(admin.client, io, 'GET', '/servers', undefined, (body) => {
      if (args.flags.json === true) return [JSON.stringify(body, null, 2)]
      const { version, servers } = body as { version: number; servers: { key: string; target: string; workspaceId?: string; server?: string }[] }
      return [`registry version ${version}, ${servers.length} servers`, ...table(['KEY', 'TARGET', 'WORKSPACE', 'SERVER'],
        servers.map((s) => [s.key, s.target, s.workspaceId ?? '-', s.server ?? '-']))]
    })
  }
  const key = rest[0]
  if (action === 'rm') {
    return callAdmin(admin.client, io, 'DELETE', `/servers/${encodeURIComponent(key)}`, undefined, () => [`removed server ${key}`])
  }
  const entry: Record<string, string> = { key, target: rest[1] }
  if (typeof args.flags.workspace === 'string') entry.workspaceId = args.flags.workspace
  if (typeof args.flags.server === 'string') entry.server = args.flags.server
  return callAdmin(admin.client, io, 'PUT', `/servers/${encodeURIComponent(key)}`, entry, (body) => {
    const e = body as { key: string; target: string }
    return [`put server ${e.key} -> ${e.target}`]
  })
}

async function reloadCommand(args: ParsedArgs, io: CliIo): Promise<number> {
  const admin = await adminFor(args, io)
  if (admin === null) return 1
  return callAdmin(admin.client, io, 'POST', '/reload', undefined, (body) => {
    const b = body as { version: number; warnings?: string[] }
    return [`reloaded (routes version ${b.version})`, ...(b.warnings ?? []).map((w) => `warning: ${w}`)]
  }, display(admin.loaded.file, io))
}

async function adminFor(args: ParsedArgs, io: CliIo): Promise<{ client: AdminClient; loaded: LoadedConfig } | null> {
  const loaded = await loadOrReport(args, io)
  if (!loaded) return null
  const client = await AdminClient.forConfig(loaded.config, io.env)
  if (Array.isArray(client)) {
    for (const line of formatIssues(display(loaded.file, io), client)) io.err(line)
    return null
  }
  return { client, loaded }
}

/**
 * One admin call: prints `ok(body)` on 2xx, else the server's error lines (prefixed with
 * `file` when they are paths in that file) and exits 1.
 */
async function callAdmin(
  client: AdminClient, io: CliIo, method: string, path: string, body: unknown,
  ok: (body: unknown) => string[], file?: string,
): Promise<number> {
  let reply: AdminReply
  try {
    reply = await client.call(method, path, body)
  } catch (err) {
    io.err(`error: ${(err as Error).message}`)
    return 1
  }
  if (reply.status >= 200 && reply.status < 300) {
    for (const line of ok(reply.body)) io.out(line)
    return 0
  }
  io.err(`error: ${method} ${path} failed with ${reply.status}:`)
  for (const line of errorLines(reply)) io.err(`  ${file === undefined ? line : `${file}: ${line}`}`)
  return 1
}

/** Left-aligned columns, two spaces apart. */
function table(head: string[], rows: string[][]): string[] {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)))
  const line = (cells: string[]): string => cells.map((c, i) => i === cells.length - 1 ? c : c.padEnd(widths[i])).join('  ')
  return [line(head), ...rows.map(line)]
}

/** The loaded config, or null after printing each problem as `FILE: path: message`. */
async function loadOrReport(args: ParsedArgs, io: CliIo): Promise<LoadedConfig | null> {
  const flag = typeof args.flags.config === 'string' ? resolve(io.cwd, args.flags.config) : undefined
  const env = io.env.GATEWAY_CONFIG ? { GATEWAY_CONFIG: resolve(io.cwd, io.env.GATEWAY_CONFIG) } : {}
  const file = resolveConfigPath(flag, env)
  try {
    return await loadConfigFile(file)
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err
    for (const line of formatIssues(display(err.file, io), err.issues)) io.err(line)
    return null
  }
}

// ---------------------------------------------------------------------------------------------
// Command line parsing

/** Runs one command line (without `node` and the script); resolves with the exit code. */
export async function runCli(argv: readonly string[], io: CliIo): Promise<number> {
  const [name, ...rest] = argv
  if (name === undefined) {
    io.err(usage())
    return 2
  }
  if (name === '--help' || name === '-h' || name === 'help') {
    const topic = rest[0]
    if (topic !== undefined && Object.hasOwn(COMMANDS, topic)) io.out(commandUsage(topic))
    else io.out(usage())
    return 0
  }
  if (!Object.hasOwn(COMMANDS, name)) {
    const problem = name.startsWith('-') ? `unknown option "${name}"` : `unknown command "${name}"`
    io.err(`error: ${problem}\n\n${usage()}`)
    return 2
  }
  const command = COMMANDS[name]
  const parsed = parseArgs(rest, command.flags)
  if ('error' in parsed) return usageError(name, parsed.error, io)
  if (parsed.flags.help === true) {
    io.out(commandUsage(name))
    return 0
  }
  if (!command.args && parsed.positionals.length > 0) {
    return usageError(name, `unexpected argument "${parsed.positionals[0]}"`, io)
  }
  return command.run(parsed, io)
}

function parseArgs(args: readonly string[], spec: Readonly<Record<string, FlagSpec>>): ParsedArgs | { error: string } {
  const flags: Record<string, string | true> = {}
  const positionals: string[] = []
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]
    if (arg === '--') {
      positionals.push(...args.slice(i + 1))
      break
    }
    if (arg === '-h') { flags.help = true; continue }
    if (!arg.startsWith('--')) {
      if (arg.startsWith('-') && arg !== '-') return { error: `unknown option "${arg}"` }
      positionals.push(arg)
      continue
    }
    const eq = arg.indexOf('=')
    const name = arg.slice(2, eq === -1 ? undefined : eq)
    if (name === 'help') { flags.help = true; continue }
    if (!Object.hasOwn(spec, name)) return { error: `unknown option "--${name}"` }
    if (!spec[name].value) {
      if (eq !== -1) return { error: `option "--${name}" takes no value` }
      flags[name] = true
      continue
    }
    let value: string | undefined = eq === -1 ? args[++i] : arg.slice(eq + 1)
    if (value === undefined || value === '' || (eq === -1 && value.startsWith('--'))) {
      return { error: `option "--${name}" needs a value (${spec[name].value})` }
    }
    flags[name] = value
  }
  return { flags, positionals }
}

function usage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((n) => n.length))
  return [
    'usage: gateway <command> [options]',
    '',
    'commands:',
    ...Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`),
    '',
    'Run "gateway <command> --help" for its options.',
  ].join('\n')
}

function commandUsage(name: string): string {
  const command = COMMANDS[name]
  const flags = Object.entries(command.flags).map(([flag, spec]) => [`--${flag}${spec.value ? ` ${spec.value}` : ''}`, spec.help])
  const width = Math.max(0, ...flags.map(([left]) => left.length))
  return [
    `usage: gateway ${name}${command.args ? ` ${command.args}` : ''}${flags.length ? ' [options]' : ''}`,
    '',
    command.summary,
    ...(flags.length ? ['', 'options:', ...flags.map(([left, help]) => `  ${left.padEnd(width)}  ${help}`)] : []),
  ].join('\n')
}

function usageError(name: string, problem: string, io: CliIo): number {
  io.err(`error: ${problem}\n\n${commandUsage(name)}`)
  return 2
}

/** A path as the operator reads it: relative to where they ran the command, when inside it. */
function display(file: string, io: CliIo): string {
  const rel = relative(io.cwd, file)
  return rel !== '' && !rel.startsWith('..') && !isAbsolute(rel) ? rel : file
}


// ---------------------------------------------------------------------------------------------

function isMain(): boolean {
  // realpath: npm runs bins through a symlink (node_modules/.bin/gateway -> dist/cli.js).
  try {
    return process.argv[1] !== undefined && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)
  } catch {
    return false
  }
}

if (isMain()) {
  const io: CliIo = {
    out: (line) => { process.stdout.write(`${line}\n`) },
    err: (line) => { process.stderr.write(`${line}\n`) },
    env: process.env,
    cwd: process.cwd(),
    exit: (code) => process.exit(code),
  }
  runCli(process.argv.slice(2), io).then((code) => process.exit(code), (err: unknown) => {
    process.stderr.write(`error: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`)
    process.exit(1)
  })
}
