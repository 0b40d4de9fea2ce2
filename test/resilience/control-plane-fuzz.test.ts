// A seeded fuzz of the gateway's control plane, where bad input must get a clear error naming
// the problem and nothing may be lost or half applied. Three parts:
//
//  1. The admin API of one live gateway (embedded registry) takes a thousand requests made by
//     mutating valid ones (and two thousand GETs that check what they did): the JSON (truncated, nested deep, huge numbers and
//     strings, wrong types, unknown, duplicate and `__proto__` keys, invalid UTF-8, BOMs), the
//     head (tokens, Host, methods, paths, If-Match, content types) and the framing (chunked,
//     short, over the body limits). Checked after every request: the answer is one well-formed
//     HTTP response, 2xx or 4xx (never 5xx), and every 4xx is `{"errors":[{path,message}]}`
//     whose body paths exist in the body sent; a refused change leaves GET /routes, GET
//     /servers and the state file's bytes exactly as they were; an accepted one is what GET
//     shows, exactly, and what the state file holds. The gateway is restarted twice on the
//     same state file and must come back with the same routes and servers.
//  2. The registry client of a live gateway follows a hostile master: lookups answered with
//     wrong types, truncated or endless bodies, error statuses, resets, stalls and trickles; an
//     event stream split at random points, with CR, LF and CRLF line ends, comments, retry and
//     unknown fields, bad ids, invalid JSON, events of unknown types and for unknown keys,
//     over-long lines, closes, resets and stalls. Checked: a workspace request whose lookup
//     failed gets 503 registry_unavailable (404 unknown_workspace_server when the master says
//     so), in bounded time; every valid event is applied in the end, and nothing from an
//     invalid one; an over-long line or body is refused, not buffered; once the master is sane
//     again, routing recovers.
//  3. Config files: a few thousand mutations of gateway.config.json go through the loader in
//     process, a sample through `gateway check` (in process, and the compiled command), and the
//     accepted ones of a sample start a real gateway (in a child process with a heap limit).
//     Checked: never anything but a ConfigError; every problem names a JSON path that exists
//     and the bad value found there; bytes that are not strict JSON (RFC 8259: UTF-8, no
//     duplicate names, numbers a double can hold) are refused; what is accepted holds only
//     documented keys, reads the same once written back out, and starts.
//
// Every case is made from the seed, its part and its number (and, for the admin API, the state
// the cases before it left), so a failure names the seed and the case, and
// `FUZZ_SEED=<seed> npx vitest run test/resilience/control-plane-fuzz.test.ts -t seeded` replays
// it; another FUZZ_SEED explores further (FUZZ_SCALE=3 runs three times as many cases; give it
// --testTimeout 120000). Bugs the fuzz found are reduced to named tests at the end.

import { isUtf8 } from 'node:buffer'
import { execFile, fork, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import http from 'node:http'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { promisify } from 'node:util'
import { afterAll, describe, expect, it } from 'vitest'
import { applyDefaults } from '../../src/config/defaults.js'
import { ConfigError, formatIssues, loadConfigFile, parseConfig } from '../../src/config/load.js'
import type { ConfigIssue } from '../../src/config/types.js'
import { Gateway } from '../../src/gateway.js'
import { createCertificates } from '../../src/listeners/certificate-authority.js'
import { RegistryClient } from '../../src/registry/registry-client.js'
import type { ServerEntry } from '../../src/registry/server-entry.js'
import { COMPILED_CLI, COMPILED_CLI_DIR, repoRoot } from '../helpers/compiled-cli.js'
import { parseResponses } from '../helpers/http-bytes.js'
import { runCaptured } from '../helpers/run-cli.js'
import { mulberry32, mix, int, pick, chance, type Rng } from '../helpers/seeded-random.js'
import { useTestScope } from '../helpers/test-scope.js'
import { httpUpstream } from '../helpers/upstream.js'

const scope = useTestScope()

const SEED = process.env.FUZZ_SEED !== undefined ? Number(process.env.FUZZ_SEED) >>> 0 : 0xc0_7e_a1
const SCALE = process.env.FUZZ_SCALE !== undefined ? Number(process.env.FUZZ_SCALE) : 1
const TOKEN = 'control-fuzz-token'

// ---- a seeded PRNG per case -------------------------------------------------------------

/** The PRNG of case `n` of a part (1, 2, 3), from the seed alone. */
function caseRng(part: number, n: number): Rng {
  return mulberry32(mix(mix(SEED, part), n))
}

function weighted<T>(rng: Rng, table: readonly (readonly [number, T])[]): T {
  let r = rng() * table.reduce((n, [w]) => n + w, 0)
  for (const [w, v] of table) {
    if (r < w) return v
    r -= w
  }
  return table[table.length - 1][1]
}

function clip(text: string, n = 120): string {
  return text.length > n ? `${text.slice(0, n)}... (${text.length} chars)` : text
}

// ---- JSON values and their mutations ------------------------------------------------------

type Seg = string | number
type Obj = Record<string, unknown>

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

/** How deep a parsed JSON value nests (iteratively: a deep value must not overflow the stack). */
function depthOf(value: unknown): number {
  let deepest = 0
  const stack: [unknown, number][] = [[value, 0]]
  while (stack.length > 0) {
    const [v, d] = stack.pop()!
    deepest = Math.max(deepest, d)
    if (typeof v === 'object' && v !== null) for (const child of Object.values(v)) stack.push([child, d + 1])
  }
  return deepest
}

/** A copy that keeps a `__proto__` key as a plain key (JSON.parse defines own properties). */
function clone<T>(v: T): T {
  return JSON.parse(JSON.stringify(v)) as T
}

function setOwn(o: Obj | unknown[], key: Seg, value: unknown): void {
  Object.defineProperty(o, key, { value, enumerable: true, writable: true, configurable: true })
}

/** Every path into `v` down to `maxDepth`; [] is the root. */
function nodePaths(v: unknown, maxDepth = 8, at: Seg[] = [], out: Seg[][] = []): Seg[][] {
  out.push(at)
  if (at.length >= maxDepth) return out
  if (Array.isArray(v)) v.forEach((x, i) => nodePaths(x, maxDepth, [...at, i], out))
  else if (isObj(v)) for (const k of Object.keys(v)) nodePaths(v[k], maxDepth, [...at, k], out)
  return out
}

function getAt(v: unknown, path: readonly Seg[]): unknown {
  let cur = v
  for (const s of path) {
    if (Array.isArray(cur) && typeof s === 'number') cur = cur[s]
    else if (isObj(cur) && typeof s === 'string' && Object.hasOwn(cur, s)) cur = cur[s]
    else return undefined
  }
  return cur
}

/** `root` with the value at `path` replaced (`undefined`: removed); the root itself when path is []. */
function setAt(root: unknown, path: readonly Seg[], value: unknown): unknown {
  if (path.length === 0) return value
  const parent = getAt(root, path.slice(0, -1))
  const last = path[path.length - 1]
  if (Array.isArray(parent) && typeof last === 'number') {
    if (value === undefined) parent.splice(last, 1)
    else parent[last] = value
  } else if (isObj(parent) && typeof last === 'string') {
    if (value === undefined) delete parent[last]
    else setOwn(parent, last, value)
  }
  return root
}

function showPath(path: readonly Seg[]): string {
  return path.map((s) => (typeof s === 'number' ? `[${s}]` : `.${s}`)).join('') || '$'
}

/** Values of every type, and the strings and numbers validators trip on. */
const ODD_VALUES: unknown[] = [
  0, -1, 1, 1.5, 2 ** 31, 2 ** 53 + 2, 1e21, true, false, null, '', ' ', 'x', 'ü', '\u0000', '\ud800', '/', '*', 'a b',
  '127.0.0.1:80', '169.254.169.254:80', '[::1]:8080', '[fe80::1]:80', 'node1:0', 'node1:65536', 'node1:080', '*.example.com',
  '..', '/a?b', '/a b', '__proto__', 'constructor', [], {}, ['x'], [1, 2], { a: 1 }, [null], ['127.0.0.1:80', 7],
]
/** Config-shaped values: ports, hosts, URLs, names, and integers at and past every bound. */
const CONFIG_VALUES: unknown[] = [
  65535, 65536, -0, '80', 80.5, 0, 2 ** 31 - 1, 2 ** 31, 2 ** 32, 1e9, Number.MAX_SAFE_INTEGER, 2 ** 20, 1024, 1025,
  '0.0.0.0', '::', '::1', 'localhost', '256.0.0.1', '0x7f.1', 'ws.example.com', '.ws.example.com', 'ws.example.com.',
  'http://127.0.0.1:8080', 'https://master/api/registry', 'ftp://x', 'http://x/?q=1', 'round-robin', 'least-connections',
  'auto', 'certs/gateway.crt', 'data/other.json', 'IDESESSIONID', 'bad cookie', 'a'.repeat(300),
]
const KEYS_TO_ADD = ['extra', '__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', 'ID', 'pathprefix', 'targets ', 'Targets', 'tls', 'port', '']

/** A value nested `depth` levels deep, as text (JSON.stringify itself overflows on it). */
function deepText(depth: number, kind: 'array' | 'object'): string {
  return kind === 'array' ? '['.repeat(depth) + ']'.repeat(depth) : '{"a":'.repeat(depth) + '1' + '}'.repeat(depth)
}

interface ValueMutationOptions {
  /** Extra values to put in (config-shaped ones for configs). */
  readonly values?: readonly unknown[]
  /** Top-level keys left alone. */
  readonly protect?: readonly string[]
}

/**
 * One mutation of a JSON value, as [what, text]: the value is changed (a copy), or its text is
 * made by a serializer that can write what JSON.stringify cannot (duplicate keys, deep nesting).
 */
function mutateValue(rng: Rng, value: unknown, options: ValueMutationOptions = {}): [string, unknown, Record<string, string>] {
  const root = clone(value)
  const protect = new Set(options.protect ?? [])
  const paths = nodePaths(root).filter((p) => !(p.length > 0 && typeof p[0] === 'string' && protect.has(p[0])) && (protect.size === 0 || p.length > 0))
  const path = pick(rng, paths)
  const target = getAt(root, path)
  /** Replacements of placeholder strings in the serialized text (for what a value cannot hold). */
  const raw: Record<string, string> = {}
  const placeholder = (text: string): string => {
    const id = `\u0001raw${Object.keys(raw).length}\u0001`
    raw[id] = text
    return id
  }
  switch (weighted(rng, [[6, 'replace'], [2, 'remove'], [3, 'add-key'], [1, 'duplicate-key'], [1, 'deep'], [1, 'big-string'], [1, 'number-text'], [1, 'duplicate-item']] as const)) {
    case 'replace': {
      const v = clone(pick(rng, chance(rng, 0.5) && options.values ? options.values : ODD_VALUES))
      return [`${showPath(path)} = ${clip(JSON.stringify(v) ?? String(v), 40)}`, setAt(root, path, v), raw]
    }
    case 'remove':
      return [`remove ${showPath(path)}`, path.length === 0 ? root : setAt(root, path, undefined), raw]
    case 'add-key': {
      const objects = paths.filter((p) => isObj(getAt(root, p)))
      if (objects.length === 0) return ['no object to add a key to', root, raw]
      const at = pick(rng, objects)
      const key = pick(rng, KEYS_TO_ADD)
      const v = clone(pick(rng, ODD_VALUES))
      setOwn(getAt(root, at) as Obj, key, v)
      return [`add key ${JSON.stringify(key)} at ${showPath(at)}`, root, raw]
    }
    case 'duplicate-key': {
      const members = paths.filter((p) => p.length > 0 && typeof p[p.length - 1] === 'string')
      if (members.length === 0) return ['no key to duplicate', root, raw]
      const at = pick(rng, members)
      const key = at[at.length - 1] as string
      const again = chance(rng, 0.5) ? getAt(root, at) : pick(rng, ODD_VALUES)
      // A second member of the same name, written after the first by the placeholder trick.
      setOwn(getAt(root, at.slice(0, -1)) as Obj, placeholder(JSON.stringify(key)), clone(again))
      return [`duplicate key ${showPath(at)}`, root, raw]
    }
    case 'deep': {
      const depth = pick(rng, [600, 3000, 20_000])
      return [`${showPath(path)} nested ${depth} deep`, setAt(root, path, placeholder(deepText(depth, chance(rng, 0.5) ? 'array' : 'object'))), raw]
    }
    case 'big-string': {
      const n = pick(rng, [1025, 5000, 70_000])
      return [`${showPath(path)} = a ${n}-character string`, setAt(root, path, 'x'.repeat(n)), raw]
    }
    case 'number-text': {
      const text = pick(rng, ['1e400', '-1e400', '123456789012345678901234567890', '1E-400', '-0', '0.0000001', '1.0', '9007199254740993'])
      return [`${showPath(path)} = ${text} (as written)`, setAt(root, path, placeholder(text)), raw]
    }
    case 'duplicate-item': {
      const arrays = paths.filter((p) => Array.isArray(getAt(root, p)) && (getAt(root, p) as unknown[]).length > 0)
      if (arrays.length === 0) return ['no array item to duplicate', root, raw]
      const at = pick(rng, arrays)
      const list = getAt(root, at) as unknown[]
      list.push(clone(list[int(rng, list.length)]))
      return [`duplicate an item of ${showPath(at)}`, root, raw]
    }
  }
  return ['unreachable', target, raw]
}

/** The JSON text of a mutated value, with its placeholders written out. */
function serialize(value: unknown, raw: Record<string, string>, pretty = false): string {
  let text = JSON.stringify(value, null, pretty ? 2 : undefined) ?? 'null'
  for (const [id, replacement] of Object.entries(raw)) {
    // As a key (a duplicate member's name) or as a value: the placeholder is a JSON string.
    text = text.split(JSON.stringify(id)).join(replacement)
  }
  return text
}

const INSERT_BYTES = ['\x00', '\xff', '\xc3', '\x80', '\xed\xa0\x80', '\xc0\xaf', '"', '\\', ',', '}', ']', '{', '[', ':', ' ', '\t', '\n', '\r', '\v', '\f', '\u00a0']

/** One mutation of JSON bytes, as [what, bytes]. */
function mutateBytes(rng: Rng, bytes: Buffer): [string, Buffer] {
  const text = bytes.toString('latin1')
  const at = int(rng, text.length + 1)
  const out = (s: string): Buffer => Buffer.from(s, 'latin1')
  switch (weighted(rng, [[3, 'truncate'], [3, 'insert'], [2, 'delete'], [2, 'invalid-utf8-in-string'], [1, 'bom'], [1, 'trailing'], [1, 'leading'], [1, 'flip']] as const)) {
    case 'truncate':
      return [`truncate at ${at}`, out(text.slice(0, at))]
    case 'insert': {
      const b = pick(rng, INSERT_BYTES)
      return [`insert ${JSON.stringify(b)} at ${at}`, out(text.slice(0, at) + b + text.slice(at))]
    }
    case 'delete':
      return [`delete byte ${at}`, out(text.slice(0, at) + text.slice(at + 1))]
    case 'invalid-utf8-in-string': {
      // Right after an opening quote: the JSON stays well formed, the encoding does not.
      const quotes = [...text.matchAll(/"/g)].map((m) => m.index ?? 0)
      if (quotes.length === 0) return ['no string for invalid UTF-8', bytes]
      const q = pick(rng, quotes) + 1
      const b = pick(rng, ['\xff', '\xfe', '\xc3(', '\x80', '\xed\xa0\x80', '\xc0\xaf', '\xf8\x88\x80\x80\x80'])
      return [`invalid UTF-8 ${JSON.stringify(b)} at ${q}`, out(text.slice(0, q) + b + text.slice(q))]
    }
    case 'bom':
      return ['a BOM first', Buffer.concat([pick(rng, [Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from([0xff, 0xfe])]), bytes])]
    case 'trailing': {
      const t = pick(rng, [' ', '\n', 'x', ',', '}', '{}', '// comment', '\x00'])
      return [`trailing ${JSON.stringify(t)}`, out(text + t)]
    }
    case 'leading': {
      const t = pick(rng, [' ', '\n\n', '/* c */', '\ufeff'.replace('\ufeff', '\xef\xbb\xbf'), '\v', 'x'])
      return [`leading ${JSON.stringify(t)}`, out(t + text)]
    }
    case 'flip': {
      const i = int(rng, Math.max(1, text.length))
      return [`flip byte ${i}`, out(text.slice(0, i) + String.fromCharCode(text.charCodeAt(i) ^ (1 << int(rng, 8))) + text.slice(i + 1))]
    }
  }
  return ['unreachable', bytes]
}

// ---- strict JSON, the oracle's reading of the bytes ---------------------------------------

/**
 * What a strict reader must make of `bytes` (RFC 8259: UTF-8 text, one value, unique member
 * names, numbers a double can hold), written apart from the gateway's own parser so that one
 * checks the other. A leading BOM is allowed (8.1: parsers MAY ignore it).
 */
function strictJson(bytes: Buffer): { ok: true; value: unknown } | { ok: false; why: string } {
  if (!isUtf8(bytes)) return { ok: false, why: 'not UTF-8' }
  let text = bytes.toString('utf8')
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1)
  if (/^[\s\S]*?[^\x20\x09\x0a\x0d][\s\S]*$/.test(text) === false) return { ok: false, why: 'empty' }
  // JSON.parse trims only JSON whitespace, as the grammar says; anything else is a syntax error.
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    return { ok: false, why: 'syntax' }
  }
  const problem = duplicateOrRange(text)
  if (problem !== null) return { ok: false, why: problem }
  return { ok: true, value }
}

/** A duplicate member name or an out-of-range number in well-formed JSON text, or null. */
function duplicateOrRange(text: string): string | null {
  const stack: (Set<string> | null)[] = []
  let expectKey = false
  for (let i = 0; i < text.length; i++) {
    const c = text[i]
    if (c === '"') {
      let j = i + 1
      while (text[j] !== '"') j += text[j] === '\\' ? 2 : 1
      const s = JSON.parse(text.slice(i, j + 1)) as string
      const keys = stack[stack.length - 1]
      if (expectKey && keys) {
        if (keys.has(s)) return `duplicate key ${JSON.stringify(s)}`
        keys.add(s)
      }
      expectKey = false
      i = j
    } else if (c === '{') {
      stack.push(new Set())
      expectKey = true
    } else if (c === '[') {
      stack.push(null)
    } else if (c === '}' || c === ']') {
      stack.pop()
    } else if (c === ',') {
      expectKey = stack[stack.length - 1] !== null
    } else if (c === '-' || (c >= '0' && c <= '9')) {
      const m = /^-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/.exec(text.slice(i))!
      if (!Number.isFinite(Number(m[0]))) return `number ${m[0]} out of range`
      i += m[0].length - 1
    }
  }
  return null
}

/** How deep objects and arrays nest in well-formed JSON text. */
function nestingDepth(text: string): number {
  let depth = 0
  let max = 0
  for (let i = 0; i < text.length; i++) {
    const c = text[i]
    if (c === '"') {
      while (text[++i] !== '"') if (text[i] === '\\') i++
    } else if (c === '{' || c === '[') {
      max = Math.max(max, ++depth)
    } else if (c === '}' || c === ']') {
      depth--
    }
  }
  return max
}

/** `routes[2].targets[0]`, `a["odd key"]` as segments; null when it is no JSON path. */
function parsePath(path: string): Seg[] | null {
  const out: Seg[] = []
  let i = 0
  while (i < path.length) {
    if (path[i] === '[') {
      const num = /^\[(\d+)\]/.exec(path.slice(i))
      if (num) {
        out.push(Number(num[1]))
        i += num[0].length
        continue
      }
      const str = /^\[("(?:[^"\\]|\\.)*")\]/.exec(path.slice(i))
      if (!str) return null
      out.push(JSON.parse(str[1]) as string)
      i += str[0].length
      continue
    }
    if (path[i] === '.' && out.length > 0) i++
    const id = /^[A-Za-z_$][A-Za-z0-9_$-]*/.exec(path.slice(i))
    if (!id) return null
    out.push(id[0])
    i += id[0].length
  }
  return out
}

/** Whether the parent of `path` exists in `v` (the value itself may be missing: "is required"). */
function parentExists(v: unknown, path: readonly Seg[]): boolean {
  const parent = getAt(v, path.slice(0, -1))
  return parent !== undefined && typeof parent === 'object' && parent !== null
}

// =============================================================================================
// Part 1: the admin API
// =============================================================================================

interface AdminGateway {
  gw: Gateway
  port: number
  dir: string
  configFile: string
  stateFile: string
}

const CONFIG_ROUTES = [
  { id: 'agent-binaries', pathPrefix: '/agent-binaries', upstream: 'agents' },
  { id: 'master', pathPrefix: '/', upstream: 'master' },
]

function adminConfig(dir: string): Record<string, unknown> {
  return {
    listeners: [{ name: 'http', port: 0, host: '127.0.0.1' }],
    admin: { host: '127.0.0.1', port: 0, token: TOKEN },
    upstreams: { master: { targets: ['127.0.0.1:9'] }, agents: { targets: ['127.0.0.1:9'] } },
    routes: CONFIG_ROUTES,
    stateFile: join(dir, 'state.json'),
  }
}

async function startAdminGateway(dir: string): Promise<AdminGateway> {
  const configFile = join(dir, 'gateway.json')
  const gw = await Gateway.start(await loadConfigFile(configFile), { log: () => {}, env: {} })
  return { gw, port: gw.addresses().admin.port, dir, configFile, stateFile: join(dir, 'state.json') }
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 4 })

/** A plain call over a keep-alive connection, for the snapshots. */
function call(port: number, method: string, path: string, body?: unknown): Promise<{ status: number; headers: http.IncomingHttpHeaders; json: any; text: string }> {
  const text = body === undefined ? undefined : JSON.stringify(body)
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: '127.0.0.1', port, method, path, agent,
      headers: { authorization: `Bearer ${TOKEN}`, ...(text === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) }) },
    }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => {
        const t = Buffer.concat(chunks).toString('utf8')
        let json: unknown = null
        try { json = JSON.parse(t) } catch { /* not JSON */ }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, json, text: t })
      })
      res.on('error', reject)
    })
    req.on('error', (e) => reject(new Error(`${method} ${path}: ${e.message}`)))
    req.end(text)
  })
}

interface Snapshot {
  readonly routes: { version: number; routes: (Obj & { source: string })[] }
  readonly etag: string | undefined
  readonly servers: { version: number; servers: ServerEntry[] }
  readonly state: Buffer
}

async function snapshot(a: AdminGateway): Promise<Snapshot> {
  const routes = await call(a.port, 'GET', '/routes')
  const servers = await call(a.port, 'GET', '/servers')
  return { routes: routes.json, etag: routes.headers.etag, servers: servers.json, state: readFileSync(a.stateFile) }
}

const byKey = (a: ServerEntry, b: ServerEntry): number => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0)

function adminRoutesOf(s: Snapshot): Obj[] {
  return s.routes.routes.filter((r) => r.source === 'admin').map(({ source: _source, ...r }) => r)
}

const ROUTE_IDS = ['a', 'b', 'c', 'docs', 'x-1', 'master', 'agent-binaries', 'Z.z']
const ROUTE_HOSTS = [undefined, 'docs.example.com', '*.example.com', 'h1.example.com', '10.0.0.7', '[::1]']
const ROUTE_PREFIXES = [undefined, '/', '/a', '/a/b', '/api', '/docs']
const ROUTE_TARGETS = ['127.0.0.1:9', 'node1.example.com:32770', '[::1]:8080']
const SERVER_KEYS = ['32770_node1', '32771_node1.example.com', 'terminal-w1.ws.example.com', '4401_n2', 'k']

interface RouteShape { id: string; host?: string; pathPrefix?: string; upstream?: string; targets?: string[] }

function randomRoute(rng: Rng, id: string, taken: Set<string>): RouteShape | null {
  for (let tries = 0; tries < 10; tries++) {
    const host = pick(rng, ROUTE_HOSTS)
    const pathPrefix = pick(rng, ROUTE_PREFIXES)
    const match = `${host ?? '*'} ${pathPrefix ?? '/'}`
    // Never the config routes' host and prefix twice in one set; those are fine to shadow.
    if (taken.has(match)) continue
    taken.add(match)
    const r: RouteShape = { id }
    if (host !== undefined) r.host = host
    if (pathPrefix !== undefined) r.pathPrefix = pathPrefix
    if (chance(rng, 0.5)) r.upstream = pick(rng, ['master', 'agents'])
    else r.targets = Array.from({ length: 1 + int(rng, 2) }, () => pick(rng, ROUTE_TARGETS))
    return r
  }
  return null
}

type Framing = 'length' | 'chunked' | 'short' | 'none' | 'both'

interface AdminCase {
  readonly n: number
  readonly method: string
  readonly path: string
  readonly headers: [string, string][]
  readonly body: Buffer | null
  readonly framing: Framing
  /** The template is valid and must be accepted (when nothing was mutated). */
  readonly mustAccept: boolean
  readonly label: string
  readonly mutated: boolean
  /** A config file to reload with (POST /reload), written before the request. */
  readonly reloadConfig?: { readonly text: string; readonly what: string }
}

function jsonBody(v: unknown): Buffer {
  return Buffer.from(JSON.stringify(v), 'utf8')
}

function makeAdminCase(n: number, current: Snapshot, port: number, baseConfig: Obj): AdminCase {
  const rng = caseRng(1, n)
  const admin = adminRoutesOf(current)
  let method = 'GET'
  let path = '/routes'
  let body: unknown
  let mustAccept = false
  let label: string
  let reloadConfig: AdminCase['reloadConfig']
  const shape = weighted(rng, [
    [16, 'routes-put'], [20, 'route-put'], [8, 'route-delete'], [4, 'route-get'], [3, 'routes-get'],
    [16, 'server-put'], [6, 'server-delete'], [3, 'server-get'], [3, 'purge'], [2, 'reload'], [1, 'reload-config'],
    [1, 'events'], [1, 'stats'], [1, 'unknown'],
  ] as const)
  switch (shape) {
    case 'routes-put': {
      const taken = new Set<string>()
      const ids = ROUTE_IDS.filter((id) => !CONFIG_ROUTES.some((c) => c.id === id))
      const routes = Array.from({ length: int(rng, 5) }, (_, i) => randomRoute(rng, ids[(i + int(rng, ids.length)) % ids.length], taken))
      const unique = routes.filter((r, i): r is RouteShape => r !== null && routes.findIndex((o) => o?.id === r.id) === i)
      method = 'PUT'
      body = { routes: unique }
      mustAccept = true
      break
    }
    case 'route-put': {
      const id = pick(rng, ROUTE_IDS)
      const otherRoutes = admin.filter((r) => r.id !== id)
      const others = new Set(otherRoutes.map((r) => `${r.host ?? '*'} ${r.pathPrefix}`))
      let r = randomRoute(rng, id, others)
      method = 'PUT'
      path = `/routes/${encodeURIComponent(id)}`
      mustAccept = r !== null && !CONFIG_ROUTES.some((c) => c.id === id)
      if (otherRoutes.length > 0 && chance(rng, 0.15)) {
        // The host and prefix of another admin route: refused, and the error is about this one.
        const other = pick(rng, otherRoutes)
        r = { id, pathPrefix: other.pathPrefix as string, upstream: 'master', ...(other.host === undefined ? {} : { host: other.host as string }) }
        mustAccept = false
      }
      if (r !== null && chance(rng, 0.5)) delete (r as Partial<RouteShape>).id
      body = r ?? { upstream: 'master' }
      break
    }
    case 'route-delete': {
      const id = chance(rng, 0.7) && admin.length > 0 ? String(pick(rng, admin).id) : pick(rng, ROUTE_IDS)
      method = 'DELETE'
      path = `/routes/${encodeURIComponent(id)}`
      mustAccept = admin.some((r) => r.id === id)
      break
    }
    case 'route-get':
      path = `/routes/${encodeURIComponent(pick(rng, ROUTE_IDS))}`
      break
    case 'routes-get':
      break
    case 'server-put': {
      const key = pick(rng, SERVER_KEYS)
      const entry: Obj = { target: pick(rng, ['node1:32770', 'node1.example.com:32771', '10.1.2.3:4401', '[::1]:4411']) }
      if (chance(rng, 0.6)) entry.workspaceId = pick(rng, ['w1', 'w42', 'workspace-9'])
      if (chance(rng, 0.6)) entry.server = pick(rng, ['wsagent', 'terminal', 'exec-agent'])
      if (chance(rng, 0.3)) entry.key = chance(rng, 0.5) ? key : key.toUpperCase()
      method = 'PUT'
      path = `/servers/${encodeURIComponent(chance(rng, 0.2) ? key.toUpperCase() : key)}`
      body = entry
      mustAccept = true
      break
    }
    case 'server-delete': {
      const key = chance(rng, 0.7) && current.servers.servers.length > 0 ? pick(rng, current.servers.servers).key : pick(rng, SERVER_KEYS)
      method = 'DELETE'
      path = `/servers/${encodeURIComponent(key)}`
      mustAccept = current.servers.servers.some((s) => s.key === key)
      break
    }
    case 'server-get':
      path = chance(rng, 0.5) ? '/servers' : `/servers/${encodeURIComponent(pick(rng, SERVER_KEYS))}`
      break
    case 'purge':
      method = 'POST'
      path = '/cache/purge'
      body = pick(rng, [undefined, {}, { key: pick(rng, SERVER_KEYS) }])
      mustAccept = true
      break
    case 'reload':
      method = 'POST'
      path = '/reload'
      mustAccept = true
      break
    case 'reload-config': {
      // A config file changed under the running gateway: only the parts a reload may change,
      // so an accepted one cannot lock this test out (admin, listeners and stateFile stay).
      method = 'POST'
      path = '/reload'
      const [what, value, raw] = mutateValue(rng, baseConfig, { values: CONFIG_VALUES, protect: ['admin', 'listeners', 'stateFile', 'accessLog', 'workers'] })
      reloadConfig = { text: serialize(value, raw, true), what }
      break
    }
    case 'events':
      path = `/events?since=${pick(rng, ['', '0', '-1', 'x', '99999999999999999', '1e3', String(current.servers.version), '%00'])}`
      break
    case 'stats':
      path = pick(rng, ['/stats', '/metrics', '/healthz', '/readyz'])
      break
    case 'unknown':
      path = pick(rng, ['/', '/admin', '/routes/', '/routes/a/b', '/servers/', '/servers/a%2Fb', '/cache', '/reload/x', '//routes'])
      method = pick(rng, ['GET', 'PUT', 'POST', 'DELETE'])
      break
  }
  label = `${shape} ${method} ${path}`
  let bytes: Buffer | null = body === undefined ? null : jsonBody(body)
  let headers: [string, string][] = [
    ['Host', `127.0.0.1:${port}`],
    ['Authorization', `Bearer ${TOKEN}`],
  ]
  if (bytes !== null) headers.push(['Content-Type', 'application/json'])
  let framing: Framing = 'length'
  const steps: string[] = []
  const count = chance(rng, 0.12) ? 0 : 1 + int(rng, chance(rng, 0.3) ? 3 : 1)
  for (let k = 0; k < count; k++) {
    const kind = weighted(rng, [
      [bytes !== null ? 8 : 0, 'value'], [bytes !== null ? 5 : 0, 'bytes'], [2, 'token'], [1, 'host'], [1, 'method'], [2, 'path'],
      [2, 'if-match'], [1, 'content-type'], [2, 'framing'], [1, 'oversize'], [1, 'header'], [1, 'body-on-read'],
    ] as const)
    switch (kind) {
      case 'value': {
        const parsed = strictJson(bytes!)
        // A body an earlier step nested thousands deep is mutated as bytes only: copying the
        // value (JSON.stringify) would overflow this test's own stack.
        if (!parsed.ok || depthOf(parsed.value) > 256) break
        const [what, value, raw] = mutateValue(rng, parsed.value)
        steps.push(what)
        bytes = Buffer.from(serialize(value, raw), 'utf8')
        break
      }
      case 'bytes': {
        const [what, next] = mutateBytes(rng, bytes!)
        steps.push(what)
        bytes = next
        break
      }
      case 'token': {
        const v = pick(rng, [null, 'Bearer wrong', `bearer ${TOKEN}`, `Bearer  ${TOKEN}`, `Bearer ${TOKEN} x`, `Basic ${TOKEN}`, `Bearer ${TOKEN}\t`, 'Bearer', `Bearer ${TOKEN.slice(0, -1)}`, `Bearer ${TOKEN}x`, `Bearer ${TOKEN}\xff`])
        headers = headers.filter(([name]) => name !== 'Authorization')
        if (v !== null) headers.push(['Authorization', v])
        steps.push(`Authorization ${JSON.stringify(v)}`)
        break
      }
      case 'host': {
        const v = pick(rng, [null, 'evil.example.com', `evil.example.com:${port}`, `LOCALHOST:${port}`, `[::1]:${port}`, `127.0.0.1:${port + 1}`, '127.0.0.1', `localhost:${port}`])
        headers = headers.filter(([name]) => name !== 'Host')
        if (v !== null) headers.push(['Host', v])
        steps.push(`Host ${JSON.stringify(v)}`)
        break
      }
      case 'method':
        method = pick(rng, ['GET', 'HEAD', 'PUT', 'POST', 'DELETE', 'PATCH', 'OPTIONS', 'TRACE', 'put'])
        steps.push(`method ${method}`)
        break
      case 'path': {
        const how = int(rng, 8)
        path = how === 0 ? `${path}/`
          : how === 1 ? path.replace(/\/([^/]*)$/, '/%zz')
            : how === 2 ? path.replace(/\/([^/]*)$/, `/${'i'.repeat(pick(rng, [256, 300, 5000]))}`)
              : how === 3 ? `${path}?x=1&x=2`
                : how === 4 ? path.replace(/\/([^/]*)$/, '/%C3%A9')
                  : how === 5 ? path.replace(/\/([^/]*)$/, '/a%2Fb')
                    : how === 6 ? path.replace(/^\/(routes|servers)/, '/$1/%2e%2e/$1')
                      : path.toUpperCase()
        steps.push(`path ${clip(path, 40)}`)
        break
      }
      case 'if-match': {
        const v = current.routes.version
        const value = pick(rng, [`"${v}"`, `W/"${v}"`, String(v), '*', `"${v - 1}"`, `"${v + 1}"`, 'garbage', '', `"1", "${v}"`, '"x'])
        headers.push(['If-Match', value])
        steps.push(`If-Match ${value}`)
        break
      }
      case 'content-type': {
        const v = pick(rng, ['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/json; charset=latin1', ''])
        headers = headers.filter(([name]) => name !== 'Content-Type')
        headers.push(['Content-Type', v])
        steps.push(`Content-Type ${JSON.stringify(v)}`)
        break
      }
      case 'framing':
        framing = pick(rng, ['chunked', 'chunked', 'short', 'none', 'both'] as const)
        if (bytes === null) bytes = Buffer.alloc(0)
        steps.push(`framing ${framing}`)
        break
      case 'oversize': {
        // Over the documented limit (64 KiB; 4 MiB for PUT /routes), or just under 64 KiB.
        const size = pick(rng, [64 * 1024 + 1, 64 * 1024 - 10, 4 * 1024 * 1024 + 1])
        const base = bytes === null ? Buffer.from('{}') : bytes
        bytes = Buffer.concat([Buffer.from(' '.repeat(Math.max(0, size - base.length)), 'latin1'), base])
        steps.push(`body padded to ${bytes.length} bytes`)
        break
      }
      case 'header': {
        const v = pick(rng, ['Expect: 100-continue', 'X_Under: 1', 'Transfer-Encoding: gzip', 'Content-Length: 5, 5', 'X-Long: ' + 'l'.repeat(20_000), 'Connection: keep-alive'])
        const c = v.indexOf(':')
        headers.push([v.slice(0, c), v.slice(c + 2)])
        steps.push(`header ${clip(v, 30)}`)
        break
      }
      case 'body-on-read':
        bytes = jsonBody({ routes: [] })
        steps.push('a body on a request that takes none')
        break
    }
  }
  return {
    n, method, path, headers, body: bytes, framing, mustAccept, reloadConfig, mutated: steps.length > 0,
    label: `${label}${steps.length > 0 ? `: ${steps.join('; ')}` : ''}${reloadConfig ? ` [config: ${reloadConfig.what}]` : ''}`,
  }
}

function encodeRequest(c: AdminCase, rng: Rng): Buffer {
  const lines = [`${c.method} ${c.path} HTTP/1.1`, ...c.headers.map(([n, v]) => `${n}: ${v}`)]
  const body = c.body ?? Buffer.alloc(0)
  let payload = body
  switch (c.framing) {
    case 'length':
      if (c.body !== null) lines.push(`Content-Length: ${body.length}`)
      break
    case 'short':
      lines.push(`Content-Length: ${body.length + 1 + int(rng, 100)}`)
      break
    case 'none':
      break
    case 'both':
    case 'chunked': {
      // 'both': Content-Length and chunked at once (RFC 9112 6.1: never both).
      if (c.framing === 'both') lines.push(`Content-Length: ${body.length}`)
      lines.push('Transfer-Encoding: chunked')
      const parts: Buffer[] = []
      for (let i = 0; i < body.length;) {
        const n = Math.min(body.length - i, 1 + int(rng, 4000))
        parts.push(Buffer.from(`${n.toString(16)}\r\n`), body.subarray(i, i + n), Buffer.from('\r\n'))
        i += n
      }
      parts.push(Buffer.from('0\r\n\r\n'))
      payload = Buffer.concat(parts)
      break
    }
  }
  lines.push('Connection: close')
  return Buffer.concat([Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1'), payload])
}

interface RawAnswer {
  readonly raw: Buffer
  readonly closed: boolean
  readonly error: string | null
}

/** Sends one request on a connection of its own and reads until the gateway closes it. */
async function rawExchange(port: number, bytes: Buffer, fin: boolean, timeoutMs = 8000): Promise<RawAnswer> {
  const socket = net.connect(port, '127.0.0.1')
  let error: string | null = null
  socket.on('error', (e: NodeJS.ErrnoException) => { error = e.code ?? e.message })
  const chunks: Buffer[] = []
  let sse = false
  socket.on('data', (d: Buffer) => {
    chunks.push(d)
    // An event stream never ends by itself: its head is the answer.
    if (!sse && /\r\ncontent-type: text\/event-stream/i.test(Buffer.concat(chunks).toString('latin1'))) {
      sse = true
      setTimeout(() => socket.destroy(), 20)
    }
  })
  // Not events.once: it rejects on 'error', and an EPIPE after the gateway answered is fine.
  const closed = new Promise<boolean>((r) => socket.once('close', () => r(true)))
  await Promise.race([new Promise((r) => socket.once('connect', r)), closed])
  socket.write(bytes)
  if (fin) socket.end()
  let timer: NodeJS.Timeout | undefined
  const done = await Promise.race([closed, new Promise<boolean>((r) => { timer = setTimeout(() => r(false), timeoutMs) })])
  clearTimeout(timer)
  socket.destroy()
  return { raw: Buffer.concat(chunks), closed: done || sse, error }
}

const TOKEN_RE = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/

interface ParsedAnswer {
  status: number
  headers: Map<string, string>
  body: string
  json: any
}

/** The one final response in `raw`, checked for well-formedness; a string says what is wrong. */
function parseAnswer(raw: Buffer, method: string): ParsedAnswer | string {
  const text = raw.toString('latin1')
  const all = parseResponses(text, () => method === 'HEAD')
  const finals = all.filter((r) => r.status >= 200)
  if (finals.length !== 1) return `${finals.length} final responses in ${JSON.stringify(clip(text, 200))}`
  const res = finals[0]
  if (!/^HTTP\/1\.1 \d{3} [^\r\n]*$/.test(res.statusLine)) return `bad status line ${JSON.stringify(res.statusLine)}`
  for (const [name, value] of res.headers) {
    if (!TOKEN_RE.test(name) || /[\x00-\x08\x0a-\x1f\x7f]/.test(value)) return `bad field line ${JSON.stringify(`${name}: ${value}`)}`
  }
  const isSse = (res.get('content-type') ?? '').startsWith('text/event-stream')
  if (!res.complete && !isSse) return `an incomplete response: ${JSON.stringify(clip(text, 200))}`
  const headers = new Map(res.headers.map(([n, v]) => [n.toLowerCase(), v]))
  const body = Buffer.from(res.body, 'latin1').toString('utf8')
  let json: unknown = null
  if (!isSse && (headers.get('content-type') ?? '').startsWith('application/json') && method !== 'HEAD') {
    try {
      json = JSON.parse(body)
    } catch {
      return `a JSON answer that does not parse: ${JSON.stringify(clip(body))}`
    }
  }
  return { status: res.status, headers, body, json }
}

/** The problem with a 4xx answer's body, or null when it is `{"errors":[{path,message},...]}`. */
function errorShapeProblem(a: ParsedAnswer, method: string): string | null {
  if (method === 'HEAD') return null
  const errors = a.json?.errors
  if (!Array.isArray(errors) || errors.length === 0) return `a ${a.status} without {"errors":[...]}: ${JSON.stringify(clip(a.body))}`
  for (const e of errors) {
    if (typeof e?.path !== 'string' || typeof e?.message !== 'string' || e.message.trim() === '') return `a malformed error ${JSON.stringify(e)}`
    if (/\n\s+at /.test(e.message)) return `a stack trace in an error: ${clip(e.message)}`
  }
  return null
}

type Op = 'routes-put' | 'route-put' | 'route-delete' | 'server-put' | 'server-delete' | 'purge' | 'reload' | 'none'

/** What a request would change if it were accepted, from its method and path as the gateway reads them. */
function opOf(method: string, path: string): { op: Op; name: string | null } {
  let pathname: string
  try {
    pathname = new URL(path, 'http://admin').pathname
  } catch {
    return { op: 'none', name: null }
  }
  const rest = (prefix: string): string | null => {
    if (!pathname.startsWith(prefix)) return null
    try {
      return decodeURIComponent(pathname.slice(prefix.length))
    } catch {
      return null
    }
  }
  if (pathname === '/routes' && method === 'PUT') return { op: 'routes-put', name: null }
  const id = rest('/routes/')
  if (id !== null && method === 'PUT') return { op: 'route-put', name: id }
  if (id !== null && method === 'DELETE') return { op: 'route-delete', name: id }
  const key = rest('/servers/')
  if (key !== null && method === 'PUT') return { op: 'server-put', name: key.toLowerCase() }
  if (key !== null && method === 'DELETE') return { op: 'server-delete', name: key.toLowerCase() }
  if (pathname === '/reload' && method === 'POST') return { op: 'reload', name: null }
  if (pathname === '/cache/purge' && method === 'POST') return { op: 'purge', name: null }
  return { op: 'none', name: null }
}

const withPrefix = (r: Obj): Obj => ({ pathPrefix: '/', ...r })

/** The entry a PUT /servers/{key} body makes, per the contract: known fields, key lower-cased. */
function expectedEntry(key: string, body: Obj): ServerEntry {
  const e: { key: string; target: string; workspaceId?: string; server?: string } = { key, target: body.target as string }
  if (typeof body.workspaceId === 'string') e.workspaceId = body.workspaceId
  if (typeof body.server === 'string') e.server = body.server
  return e
}

/** Checks one answered case against the snapshots around it; returns the problems. */
function checkAdminCase(c: AdminCase, answer: RawAnswer, status: number, before: Snapshot, after: Snapshot, configRoutesAfter: readonly Obj[]): string[] {
  const problems: string[] = []
  // Without framing, the bytes are no body: the gateway reads none, and takes them for a next request.
  const body = c.framing === 'none' ? null : c.body
  const oracle = body === null ? null : strictJson(body)
  const { op, name } = opOf(c.method, c.path)
  if (answer.raw.length === 0) {
    // Only a client that went away mid-body, or one refused over the body limit (whose unread
    // rest resets the connection), may go unanswered.
    const mayVanish = c.framing === 'short' || (c.body !== null && c.body.length > 64 * 1024)
    if (!mayVanish) problems.push(`no answer (${answer.closed ? 'closed' : 'still open'}, ${answer.error ?? 'no error'})`)
  } else {
    const a = parseAnswer(answer.raw, c.method)
    if (typeof a === 'string') {
      problems.push(a)
      return problems
    }
    if (status >= 500 || status < 200 || (status >= 300 && status < 400)) problems.push(`status ${status}: ${clip(a.body, 300)}`)
    if (status >= 400 && status < 500) {
      const shape = errorShapeProblem(a, c.method)
      if (shape !== null) problems.push(shape)
      // Errors about the body name a place in it.
      if (status === 400 && oracle?.ok && (op === 'routes-put' || op === 'route-put') && Array.isArray(a.json?.errors)) {
        for (const e of a.json.errors as ConfigIssue[]) {
          if (['', '$', 'id', 'If-Match'].includes(e.path)) continue
          const p = parsePath(e.path)
          if (p === null || !parentExists(oracle.value, p)) problems.push(`error path ${JSON.stringify(e.path)} is not in the body: ${e.message}`)
        }
      }
    }
    if (status >= 200 && status < 300 && a.json !== null && op !== 'none') {
      // The answer to a change is what GET shows afterwards.
      if (op.startsWith('route')) {
        if (JSON.stringify(a.json) !== JSON.stringify(after.routes)) problems.push(`the answer ${clip(a.body)} is not GET /routes after it`)
        if (a.headers.get('etag') !== after.etag) problems.push(`ETag ${a.headers.get('etag')} after the change, GET says ${after.etag}`)
      }
    }
  }
  const accepted = status >= 200 && status < 300
  if (!accepted) {
    if (c.mustAccept && !c.mutated) problems.push(`a valid request was refused with ${status}`)
    if (JSON.stringify(after.routes) !== JSON.stringify(before.routes)) problems.push(`refused (${status}), yet the routes changed: ${clip(JSON.stringify(after.routes), 300)}`)
    if (JSON.stringify(after.servers) !== JSON.stringify(before.servers)) problems.push(`refused (${status}), yet the servers changed`)
    if (!after.state.equals(before.state)) problems.push(`refused (${status}), yet the state file changed`)
    return problems
  }
  // Accepted: bytes that are not strict JSON never are.
  const takesBody = op === 'routes-put' || op === 'route-put' || op === 'server-put' || (op === 'purge' && body !== null && body.toString('latin1').trim() !== '')
  if (takesBody && oracle !== null && !oracle.ok) {
    problems.push(`accepted a body that is not strict JSON (${oracle.why})`)
    return problems
  }
  const value = oracle?.ok ? oracle.value : undefined
  let admin = adminRoutesOf(before)
  let servers = before.servers.servers.slice()
  let bump = 0
  switch (op) {
    case 'routes-put':
      admin = ((value as Obj).routes as Obj[]).map(withPrefix)
      bump = 1
      break
    case 'route-put': {
      const route = withPrefix({ ...(value as Obj), id: name })
      const at = admin.findIndex((r) => r.id === name)
      admin = at < 0 ? [...admin, route] : admin.map((r, i) => (i === at ? route : r))
      bump = 1
      break
    }
    case 'route-delete':
      admin = admin.filter((r) => r.id !== name)
      bump = 1
      break
    case 'server-put':
      servers = [...servers.filter((s) => s.key !== name), expectedEntry(name!, value as Obj)]
      break
    case 'server-delete':
      servers = servers.filter((s) => s.key !== name)
      break
    case 'reload':
      bump = 1
      break
  }
  const expectRoutes = [...configRoutesAfter.map((r) => ({ ...r, source: 'config' })), ...admin.map((r) => ({ ...r, source: 'admin' }))]
  if (JSON.stringify(sortKeys(after.routes.routes)) !== JSON.stringify(sortKeys(expectRoutes))) {
    problems.push(`accepted (${status}), but GET /routes shows ${clip(JSON.stringify(after.routes.routes), 400)}, not ${clip(JSON.stringify(expectRoutes), 400)}`)
  }
  if (after.routes.version !== before.routes.version + bump) problems.push(`routes version ${before.routes.version} -> ${after.routes.version}, expected +${bump}`)
  if (JSON.stringify(sortKeys(after.servers.servers.slice().sort(byKey))) !== JSON.stringify(sortKeys(servers.sort(byKey)))) {
    problems.push(`accepted (${status}), but GET /servers shows ${clip(JSON.stringify(after.servers.servers), 300)}, not ${clip(JSON.stringify(servers), 300)}`)
  }
  if ((op === 'none' || op === 'purge') && !after.state.equals(before.state)) problems.push('a request that changes nothing changed the state file')
  return problems
}

/** Objects with their keys sorted, so that key order never decides an equality. */
function sortKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortKeys)
  if (isObj(v)) return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sortKeys(v[k])]))
  return v
}

/** The state file is whole JSON and holds what GET shows. */
function stateFileProblems(s: Snapshot): string[] {
  let doc: any
  try {
    doc = JSON.parse(s.state.toString('utf8'))
  } catch (err) {
    return [`the state file is not JSON: ${(err as Error).message}`]
  }
  const problems: string[] = []
  if (JSON.stringify(sortKeys(doc.routes ?? [])) !== JSON.stringify(sortKeys(adminRoutesOf(s)))) problems.push('the state file routes are not the admin routes GET shows')
  if (JSON.stringify(sortKeys((doc.servers ?? []).slice().sort(byKey))) !== JSON.stringify(sortKeys(s.servers.servers.slice().sort(byKey)))) problems.push('the state file servers are not those GET shows')
  if (doc.routesVersion !== s.routes.version) problems.push(`the state file routesVersion ${doc.routesVersion} is not GET's ${s.routes.version}`)
  if (doc.version !== s.servers.version) problems.push(`the state file version ${doc.version} is not GET /servers' ${s.servers.version}`)
  return problems
}

const ADMIN_CASES = Math.round(1000 * SCALE)

describe('seeded control-plane fuzzing: the admin API', () => {
  it(`answers ${ADMIN_CASES} hostile admin requests (seed ${SEED}) with a 2xx or a 4xx naming the problem, and applies all of a change or none of it`, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gw-control-fuzz-'))
    scope.defer(() => rmSync(dir, { recursive: true, force: true }))
    const baseConfig = adminConfig(dir)
    const baseText = JSON.stringify(baseConfig, null, 2)
    writeFileSync(join(dir, 'gateway.json'), baseText)
    let a = await startAdminGateway(dir)
    scope.defer(() => a.gw.close())
    let configRoutes: readonly Obj[] = CONFIG_ROUTES
    let current = await snapshot(a)
    const problems: string[] = []
    const counts = { accepted: 0, refused: 0, unanswered: 0, restarts: 0 }
    const started = performance.now()
    for (let n = 0; n < ADMIN_CASES && problems.length < 20; n++) {
      if (n > 0 && n % Math.ceil(ADMIN_CASES / 3) === 0) {
        // A restart on the same state file: everything accepted so far comes back.
        await a.gw.close()
        a = await startAdminGateway(dir)
        counts.restarts++
        const again = await snapshot(a)
        if (JSON.stringify(again.routes.routes) !== JSON.stringify(current.routes.routes)) problems.push(`after restart ${counts.restarts}: routes ${clip(JSON.stringify(again.routes.routes), 300)}, were ${clip(JSON.stringify(current.routes.routes), 300)}`)
        if (again.routes.version !== current.routes.version + 1) problems.push(`after restart ${counts.restarts}: routes version ${again.routes.version}, was ${current.routes.version}`)
        if (JSON.stringify(again.servers.servers) !== JSON.stringify(current.servers.servers)) problems.push(`after restart ${counts.restarts}: servers differ`)
        current = again
      }
      const c = makeAdminCase(n, current, a.port, baseConfig)
      if (c.reloadConfig) writeFileSync(a.configFile, c.reloadConfig.text)
      // A body cut short is always followed by a FIN (else the gateway would wait 30 s for the
      // rest); a third of the others are too, and must still get their answer.
      const answer = await rawExchange(a.port, encodeRequest(c, caseRng(11, n)), c.framing === 'short' || chance(caseRng(13, n), 1 / 3))
      const after = await snapshot(a)
      const parsed = answer.raw.length === 0 ? null : parseAnswer(answer.raw, c.method)
      const status = parsed === null || typeof parsed === 'string' ? 0 : parsed.status
      let configAfter = configRoutes
      if (c.reloadConfig && status === 200) {
        // Accepted, so it is a valid config: its routes are the config routes from now on.
        const loaded = parseConfig(JSON.parse(c.reloadConfig.text), dir)
        if ('config' in loaded) configAfter = loaded.config.routes.map((r) => ({ ...r }))
      }
      const found = checkAdminCase(c, answer, status, current, after, configAfter).concat(stateFileProblems(after))
      for (const p of found) problems.push(`case ${n} (${c.label}): ${p}`)
      if (answer.raw.length === 0) counts.unanswered++
      else if (status < 300) counts.accepted++
      else counts.refused++
      current = after
      if (c.reloadConfig) {
        // Back to the config this test runs on, whatever the mutated one did.
        writeFileSync(a.configFile, baseText)
        const back = await call(a.port, 'POST', '/reload')
        if (back.status !== 200) problems.push(`case ${n}: reloading the original config again answered ${back.status} ${back.text}`)
        configRoutes = CONFIG_ROUTES
        current = await snapshot(a)
      } else {
        configRoutes = configAfter
      }
    }
    // Changes made at once are all kept: none lost, none half applied.
    const ids = Array.from({ length: 12 }, (_, i) => `burst-${i}`)
    const burst = await Promise.all(ids.map((id, i) => call(a.port, 'PUT', `/routes/${id}`, { pathPrefix: `/burst/${i}`, upstream: 'master' })))
    const final = await snapshot(a)
    const elapsed = Math.round(performance.now() - started)
    expect(problems.slice(0, 12), `seed ${SEED}: ${problems.length} broken invariant(s) in the admin fuzz (${elapsed} ms, ${JSON.stringify(counts)}); replay with FUZZ_SEED=${SEED}`).toEqual([])
    expect(burst.map((r) => r.status), `seed ${SEED}: concurrent route changes`).toEqual(ids.map(() => 201))
    expect(ids.filter((id) => !adminRoutesOf(final).some((r) => r.id === id)), `seed ${SEED}: concurrent route changes lost`).toEqual([])
    expect(stateFileProblems(final), `seed ${SEED}: the state file after the burst`).toEqual([])
    // The fuzz reaches both sides, or it proves nothing.
    expect(counts.accepted, `seed ${SEED}: accepted requests`).toBeGreaterThan(ADMIN_CASES / 5)
    expect(counts.refused, `seed ${SEED}: refused requests`).toBeGreaterThan(ADMIN_CASES / 5)
    expect(counts.restarts).toBe(2)
  })
})

// =============================================================================================
// Part 2: the registry client against a hostile master
// =============================================================================================

/** Client bounds, small so that the fuzz can wait them out (the gateway's defaults are 2/3/3/60 s). */
const CLIENT = { connectTimeoutMs: 500, headersTimeoutMs: 400, bodyTimeoutMs: 400, eventIdleTimeoutMs: 600, backoffMinMs: 5, backoffMaxMs: 40, maxLineLength: 4096 }
/** The longest a workspace request may wait on a lookup: every client bound, plus slack for a loaded machine. */
const LOOKUP_BOUND_MS = CLIENT.connectTimeoutMs + CLIENT.headersTimeoutMs + CLIENT.bodyTimeoutMs + 1500
/** What a client that buffered without end would let the master write, against what a bounded one does. */
const CUT_OFF_BYTES = 16 * 1024 * 1024
const ENDLESS_BYTES = 64 * 1024 * 1024

type Expect = 'ok' | 'unknown' | 'unavailable' | 'ok-or-unavailable'

const LOOKUP_MODES = [
  [10, 'ok', 'ok'], [2, 'ok-upper-key', 'ok'], [2, 'ok-extra-fields', 'ok'], [2, 'ok-slow', 'ok'], [1, 'early-hints', 'ok'],
  [4, 'not-found', 'unknown'], [1, 'not-found-huge', 'unknown'], [2, 'metadata-target', 'unknown'],
  [4, 'status', 'unavailable'], [2, 'wrong-key', 'unavailable'], [6, 'wrong-type', 'unavailable'], [2, 'truncated', 'unavailable'],
  [2, 'short-body', 'unavailable'], [1, 'huge', 'unavailable'], [1, 'huge-chunked', 'unavailable'], [1, 'endless', 'unavailable'],
  [1, 'bom', 'ok-or-unavailable'], [1, 'invalid-utf8', 'ok-or-unavailable'], [1, 'html', 'unavailable'], [1, 'empty', 'unavailable'],
  [1, 'deep', 'unavailable'], [2, 'reset', 'unavailable'], [1, 'reset-after-head', 'unavailable'], [1, 'stall-head', 'unavailable'],
  [1, 'stall-body', 'unavailable'], [1, 'trickle', 'unavailable'],
] as const satisfies readonly (readonly [number, string, Expect])[]
type LookupMode = (typeof LOOKUP_MODES)[number][1]

type ConnectFault = 'status-500' | 'html' | 'close-at-once' | 'no-body' | 'stall'

/**
 * A master registry that misbehaves on request: lookups by a per-key mode, event-stream
 * connections by a queue of faults, and whatever bytes the test writes to the live stream.
 * Its state (servers, version, the log of valid events) stays consistent: replays with
 * `since=` and lookups always tell the truth, so a client that recovers converges on it.
 */
class HostileMaster {
  readonly servers = new Map<string, ServerEntry>()
  version = 0
  readonly lookupModes = new Map<string, { mode: LookupMode; detail: number }>()
  readonly connectFaults: ConnectFault[] = []
  /** The live event stream the test writes to (the newest good connection), or null. */
  stream: http.ServerResponse | null = null
  eventConnects = 0
  /** Bytes written to an endless answer or line before the client cut it off. */
  readonly cutOffAt: number[] = []
  private readonly log: { version: number; frame: string }[] = []
  private readonly sockets = new Set<net.Socket>()
  private readonly timers = new Set<NodeJS.Timeout>()
  private waiters: (() => void)[] = []
  private closing = false
  private port = 0

  private constructor(private readonly server: http.Server) {}

  static async start(): Promise<HostileMaster> {
    const master: HostileMaster = new HostileMaster(http.createServer((req, res) => master.handle(req, res)))
    master.server.on('connection', (s) => {
      master.sockets.add(s)
      s.on('close', () => master.sockets.delete(s))
    })
    master.server.listen(0, '127.0.0.1')
    await once(master.server, 'listening')
    master.port = (master.server.address() as net.AddressInfo).port
    return master
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`
  }

  /** A valid put, logged for replay; returns its frame's lines (without the blank line). */
  put(entry: ServerEntry): string[] {
    this.servers.set(entry.key, entry)
    this.version++
    const lines = [`id: ${this.version}`, `data: ${JSON.stringify({ op: 'put', server: entry, ts: Date.now() })}`]
    this.log.push({ version: this.version, frame: `${lines.join('\n')}\n\n` })
    return lines
  }

  /** The live stream, waiting (up to `ms`) for the client to connect one. */
  async liveStream(ms = 3000): Promise<http.ServerResponse | null> {
    const deadline = Date.now() + ms
    while (this.stream === null || this.stream.destroyed) {
      if (Date.now() > deadline) return null
      await new Promise<void>((r) => {
        this.waiters.push(r)
        setTimeout(r, 50)
      })
    }
    return this.stream
  }

  /** The stream stays open, but the next case waits for a new one (this one is stalled). */
  retire(): void {
    this.stream = null
  }

  later(ms: number, fn: () => void): void {
    const t = setTimeout(() => {
      this.timers.delete(t)
      if (!this.closing) fn()
    }, ms)
    this.timers.add(t)
  }

  async close(): Promise<void> {
    this.closing = true
    for (const t of this.timers) clearTimeout(t)
    for (const s of this.sockets) s.destroy()
    await new Promise((r) => this.server.close(r))
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://x')
    if (url.pathname === '/events') this.serveEvents(url, res)
    else if (url.pathname === '/servers') send(res, 200, JSON.stringify({ version: this.version, servers: [...this.servers.values()] }))
    else if (url.pathname.startsWith('/servers/')) {
      const key = decodeURIComponent(url.pathname.slice('/servers/'.length))
      const plan = this.lookupModes.get(key) ?? { mode: 'ok', detail: 0 }
      this.answerLookup(plan.mode, plan.detail, key, res)
    } else send(res, 404, '{}')
  }

  private serveEvents(url: URL, res: http.ServerResponse): void {
    this.eventConnects++
    const fault = this.connectFaults.shift()
    switch (fault) {
      case 'status-500': send(res, 500, 'oops'); return
      case 'html': send(res, 200, '<html>', 'text/html'); return
      case 'close-at-once': res.socket?.destroy(); return
      case 'no-body': res.writeHead(200, { 'content-type': 'text/event-stream' }); res.end(); return
      case 'stall': return // the client's headers timeout ends it
    }
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    res.flushHeaders()
    const since = Number(url.searchParams.get('since'))
    if (!Number.isSafeInteger(since) || since < 0 || since > this.version) {
      res.write(`event: reset\nid: ${this.version}\ndata: {}\n\n`)
    } else {
      for (const e of this.log) if (e.version > since) res.write(e.frame)
    }
    this.stream = res
    res.on('close', () => { if (this.stream === res) this.stream = null })
    for (const w of this.waiters.splice(0)) w()
  }

  private answerLookup(mode: LookupMode, detail: number, key: string, res: http.ServerResponse): void {
    const entry = this.servers.get(key)
    const ok = entry === undefined ? null : JSON.stringify(entry)
    const okOr404 = (body: string | null): void => { if (body === null) send(res, 404, '{"error":"not found"}'); else send(res, 200, body) }
    switch (mode) {
      case 'ok': return okOr404(ok)
      case 'ok-upper-key': return okOr404(entry === undefined ? null : JSON.stringify({ ...entry, key: key.toUpperCase() }))
      case 'ok-extra-fields': return okOr404(entry === undefined ? null : JSON.stringify({ ...entry, workspaceId: null, server: null, extra: { nested: [1, { a: null }] }, version: 7 }))
      case 'ok-slow': return this.later(CLIENT.headersTimeoutMs / 4, () => okOr404(ok))
      case 'early-hints':
        res.writeEarlyHints({ link: '</x>; rel=preload' })
        return okOr404(ok)
      case 'not-found': return send(res, 404, '{"error":"not found"}')
      case 'not-found-huge': return send(res, 404, 'n'.repeat(1024 * 1024))
      case 'metadata-target': return send(res, 200, JSON.stringify({ key, target: '169.254.169.254:80' }))
      case 'status': return send(res, [500, 502, 503, 301, 204, 401, 429, 304][detail % 8], '{"error":"no"}')
      case 'wrong-key': return send(res, 200, JSON.stringify({ ...entry, key: 'someone-else' }))
      case 'wrong-type': {
        const bodies = [
          `{"key":42,"target":"127.0.0.1:1"}`, `{"key":"${key}","target":["127.0.0.1",1]}`, `{"key":"${key}","target":"no-port"}`,
          `{"key":"${key}","target":"127.0.0.1:1","workspaceId":5}`, '[]', 'null', '"str"', '42', '{}', `{"key":"${key}"}`,
          `{"key":"${key}","target":"127.0.0.1:1","server":"${'s'.repeat(2000)}"}`, `{"key":"${key}","target":"127.0.0.1:99999"}`,
          `{"key":"${key}/x","target":"127.0.0.1:1"}`, `{"key":"","target":"127.0.0.1:1"}`,
        ]
        return send(res, 200, bodies[detail % bodies.length])
      }
      case 'truncated': return send(res, 200, (ok ?? '{}').slice(0, 1 + (detail % Math.max(1, (ok ?? '{}').length - 1))))
      case 'short-body':
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': String((ok ?? '{}').length + 10) })
        res.write(ok ?? '{}')
        return this.later(5, () => res.socket?.destroy())
      case 'huge': return send(res, 200, `{"key":"${key}","pad":"${'x'.repeat(2 * 1024 * 1024)}"}`)
      case 'huge-chunked':
        res.writeHead(200, { 'content-type': 'application/json' })
        return void res.end(`{"key":"${key}","pad":"${'x'.repeat(2 * 1024 * 1024)}"}`)
      case 'endless':
        res.writeHead(200, { 'content-type': 'application/json' })
        res.write(`{"key":"${key}","pad":"`)
        return void this.writeEndless(res)
      case 'bom': return okOr404(ok && `\ufeff${ok}`)
      case 'invalid-utf8':
        if (entry === undefined) return okOr404(null)
        res.writeHead(200, { 'content-type': 'application/json' })
        return void res.end(Buffer.concat([Buffer.from(`{"key":"${key}","target":"${entry.target}","workspaceId":"w`), Buffer.from([0xff, 0xc3]), Buffer.from('"}')]))
      case 'html': return send(res, 200, '<html><body>registry</body></html>', 'text/html')
      case 'empty': return send(res, 200, '')
      case 'deep': return send(res, 200, deepText(30_000, 'array'))
      case 'reset': return void res.socket?.resetAndDestroy()
      case 'reset-after-head':
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': '100' })
        res.flushHeaders()
        return this.later(5, () => res.socket?.resetAndDestroy())
      case 'stall-head': return // never answered: the client's headers timeout ends it
      case 'stall-body':
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': '100' })
        res.write('{"key":')
        return
      case 'trickle': {
        // A byte well within every idle bound, for ever: only a bound on the whole lookup ends it.
        res.writeHead(200, { 'content-type': 'application/json' })
        res.write('{"key":"')
        const drip = (): void => {
          if (res.destroyed) return
          res.write('k')
          this.later(CLIENT.bodyTimeoutMs / 4, drip)
        }
        return drip()
      }
    }
  }

  /** Writes `x` with backpressure until the client goes or ENDLESS_BYTES are out; records how far it got. */
  async writeEndless(res: http.ServerResponse): Promise<void> {
    const chunk = Buffer.alloc(64 * 1024, 0x78)
    let written = 0
    let closed = false
    res.on('close', () => { closed = true })
    while (!closed && written < ENDLESS_BYTES && !this.closing) {
      written += chunk.length
      if (!res.write(chunk)) {
        await new Promise<void>((resolve) => {
          const done = (): void => {
            res.off('drain', done)
            res.off('close', done)
            resolve()
          }
          res.on('drain', done)
          res.on('close', done)
        })
      }
    }
    this.cutOffAt.push(written)
    if (!closed) res.destroy()
  }
}

function send(res: http.ServerResponse, status: number, body: string, type = 'application/json'): void {
  if (res.destroyed) return
  res.writeHead(status, { 'content-type': type, 'content-length': String(Buffer.byteLength(body)) })
  res.end(body)
}

const probeAgent = new http.Agent({ keepAlive: true, maxSockets: 16 })
afterAll(() => {
  agent.destroy()
  probeAgent.destroy()
})

interface Probe {
  readonly status: number
  readonly code: string | undefined
  readonly body: string
  readonly ms: number
}

/** A workspace request through the gateway (`/{key}/probe`); status 0 when no answer came in time. */
function probe(port: number, key: string, timeoutMs = LOOKUP_BOUND_MS + 2000): Promise<Probe> {
  const started = performance.now()
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: `/${key}/probe`, agent: probeAgent, headers: { accept: 'application/json' } }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => { body += d })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, code: res.headers['x-gateway-error'] as string | undefined, body, ms: performance.now() - started }))
      res.on('error', () => resolve({ status: 0, code: 'response error', body, ms: performance.now() - started }))
    })
    req.setTimeout(timeoutMs, () => {
      req.destroy()
      resolve({ status: 0, code: 'no answer', body: '', ms: performance.now() - started })
    })
    req.on('error', (e: NodeJS.ErrnoException) => resolve({ status: 0, code: e.code ?? e.message, body: '', ms: performance.now() - started }))
  })
}

function outcomeProblem(expect: Expect, p: Probe): string | null {
  const got = `${p.status} ${p.code ?? ''} ${clip(p.body, 80)} in ${Math.round(p.ms)} ms`
  if (p.ms > LOOKUP_BOUND_MS) return `answered after ${Math.round(p.ms)} ms, past every bound (${LOOKUP_BOUND_MS} ms): ${got}`
  const ok = p.status === 200 && p.body === 'A'
  const unknown = p.status === 404 && p.code === 'unknown_workspace_server'
  const unavailable = p.status === 503 && p.code === 'registry_unavailable'
  const fine = expect === 'ok' ? ok : expect === 'unknown' ? unknown : expect === 'unavailable' ? unavailable : ok || unavailable
  return fine ? null : `expected ${expect}, got ${got}`
}

/** Joins SSE lines with `ending` ('mixed': a random one per line); a blank line never merges with a CR before it. */
function sseText(rng: Rng, lines: readonly string[], ending: '\n' | '\r\n' | '\r' | 'mixed'): string {
  let out = ''
  let previous = ''
  for (const line of lines) {
    let end = ending === 'mixed' ? pick(rng, ['\n', '\r\n', '\r']) : ending
    // "a\r" then "\n" would be one line end (CRLF), not a line and a blank line.
    if (previous === '\r' && line === '' && end === '\n') end = '\r'
    out += line + end
    previous = end
  }
  return out
}

/**
 * Lines that must change nothing: each either ends its event with a blank line or holds no
 * data, so a valid event written after it is still read whole. `overLong` lines make the
 * client drop the stream (and resume it).
 */
function junkLines(rng: Rng, tracked: readonly string[], targetC: string, n: number): string[] {
  const key = pick(rng, tracked)
  const putC = JSON.stringify({ op: 'put', server: { key, target: targetC } })
  switch (int(rng, 24)) {
    case 0: return ['data: {"op":"put","server":', '']
    case 1: return ['data: {"op":"put","server":{"key":42,"target":"x:1"}}', '']
    case 2: return [`data: ${pick(rng, ['[]', 'null', '"s"', '42', '{}', '{"op":"frob","key":"k"}', '{"op":"delete","key":5}', '{"op":"put","server":"x"}'])}`, '']
    // An event type this gateway does not know: ignored, whatever it says.
    case 3: return [`event: ${pick(rng, ['x-future', 'put', 'Message', 'message '])}`, `data: ${putC}`, '']
    case 4: return [`data: ${JSON.stringify({ op: 'put', server: { key, target: pick(rng, ['not a target', 'x:0', '', `${targetC}/x`]) } })}`, '']
    case 5: return [`data: ${JSON.stringify({ op: 'delete', key: `${key}/x` })}`, '']
    // Events for keys nobody asked for: applied, and harmless.
    case 6: return [`data: ${JSON.stringify({ op: 'put', server: { key: `9_unknown${n}`, target: '127.0.0.1:1' } })}`, '']
    case 7: return [`data: ${JSON.stringify({ op: 'delete', key: `9_unknown${n}` })}`, '']
    case 8: return [pick(rng, [': keepalive', ':', ': data: ' + putC]), '']
    case 9: return [pick(rng, ['retry: 10', 'retry: abc', 'retry:', 'foo: bar', 'ID: 7', 'Data: x', ': comment'])]
    case 10: return ['data', '']
    // Ids that are no version, and versions from the past and the future (a replay, a reset).
    case 11: return [pick(rng, ['id: abc', 'id:', 'id: 1\u0000', 'id: 99999999999999999', 'id: -3', 'id: 1.5', 'id: 0x10', 'id: 1', 'id: 999999999'])]
    case 12: return [`data: ${putC.slice(0, 20)}`, `data: ${putC.slice(20)}x`, '']
    case 13: return ['data: \xff\xfe not UTF-8', '']
    case 14: return ['\xef\xbb\xbfdata: a BOM mid-stream', '']
    case 15: return ['data: a', 'data: b', 'event:', '']
    case 16: return [`data: ${'x'.repeat(CLIENT.maxLineLength + 1 + int(rng, 20_000))}`, ''] // over the line bound
    case 17: return [`:${' '.repeat(CLIENT.maxLineLength + 10)}`, ''] // a comment over the bound too
    case 18: return ['event: reset', 'data: {}', ''] // the cache is dropped and reconciled
    case 19: return ['', '', '']
    case 20: return [`data: ${JSON.stringify({ op: 'put', server: { key: key.toUpperCase() + '\u00e9', target: targetC } })}`, '']
    case 21: return [`data:${JSON.stringify({ op: 'delete', key: '' })}`, '']
    case 22: return ['event: message', 'data: {"op":"put","server":{"key":"x","target":"127.0.0.1:1"},"ts":"soon"}', '']
    default: return ['data: \u0000', '']
  }
}

/** Writes `text` (latin1 bytes) to the stream in random pieces, a timer turn apart. */
async function writePieces(rng: Rng, res: http.ServerResponse, text: string): Promise<void> {
  const bytes = Buffer.from(text, 'latin1')
  const cuts = new Set<number>()
  for (let k = int(rng, 6); k > 0; k--) cuts.add(1 + int(rng, Math.max(1, bytes.length - 1)))
  let from = 0
  for (const at of [...[...cuts].sort((x, y) => x - y), bytes.length]) {
    if (res.destroyed) return
    if (at > from) res.write(bytes.subarray(from, at))
    from = at
    if (chance(rng, 0.5)) await new Promise((r) => setImmediate(r))
  }
}

/** A gateway following `master` with a registry client of small bounds; closed after the test. */
async function followerGateway(master: HostileMaster): Promise<{ gw: Gateway; client: RegistryClient; port: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'gw-control-fuzz-'))
  scope.defer(() => rmSync(dir, { recursive: true, force: true }))
  const configFile = join(dir, 'gateway.json')
  writeFileSync(configFile, JSON.stringify({
    listeners: [{ name: 'http', port: 0, host: '127.0.0.1' }],
    admin: { host: '127.0.0.1', port: 0, token: TOKEN },
    upstreams: { master: { targets: ['127.0.0.1:9'] } },
    routes: [{ id: 'master', pathPrefix: '/', upstream: 'master' }],
    workspaces: { registry: { url: master.url, cacheTtlMs: 60_000, negativeTtlMs: 0, staleIfErrorMs: 0 } },
    stateFile: join(dir, 'state.json'),
  }))
  const client = new RegistryClient({ url: master.url, ...CLIENT })
  const gw = await Gateway.start(await loadConfigFile(configFile), { log: () => {}, env: {}, registrySource: client })
  scope.defer(() => gw.close())
  return { gw, client, port: gw.addresses().http.port }
}

const LOOKUP_CASES = Math.round(160 * SCALE)
const STREAM_CASES = Math.round(70 * SCALE)

describe('seeded control-plane fuzzing: the registry client against a hostile master', () => {
  it(`answers every workspace request in bounded time with the contract's code, applies every valid event and recovers (seed ${SEED})`, async () => {
    const [upA, upB, upC] = await Promise.all(['A', 'B', 'C'].map((name) => httpUpstream((_req, res) => res.end(name))))
    for (const u of [upA, upB, upC]) scope.defer(() => u.close())
    const bodyOf = new Map([[upA.target, 'A'], [upB.target, 'B']])
    const master = await HostileMaster.start()
    scope.defer(() => master.close())
    const { gw, client, port } = await followerGateway(master)
    const problems: string[] = []
    const started = performance.now()

    // Lookups: each case a key of its own, answered by a mode of its own, several at a time.
    const cases = Array.from({ length: LOOKUP_CASES }, (_, n) => {
      const rng = caseRng(2, n)
      const [, mode, expect] = weighted(rng, LOOKUP_MODES.map(([w, m, e]) => [w, [w, m, e] as const] as const))
      const key = `7_lk${n}`
      master.servers.set(key, { key, target: upA.target, workspaceId: `w${n}` })
      master.lookupModes.set(key, { mode, detail: int(rng, 1000) })
      return { n, key, mode, expect: expect as Expect }
    })
    let next = 0
    await Promise.all(Array.from({ length: 12 }, async () => {
      while (next < cases.length) {
        const c = cases[next++]
        const p = await probe(port, c.key)
        const problem = outcomeProblem(c.expect, p)
        if (problem !== null) problems.push(`lookup case ${c.n} (${c.mode}): ${problem}`)
      }
    }))
    for (const written of master.cutOffAt) {
      if (written >= CUT_OFF_BYTES) problems.push(`an endless lookup answer was read for ${written} bytes: the client buffers without bound`)
    }
    const lookupMs = Math.round(performance.now() - started)

    // The event stream: keys the gateway holds, moved between A and B by valid events hidden
    // among hostile bytes; every valid event must win in the end, and nothing else may.
    const tracked = ['7_t0', '7_t1', '7_t2', '7_t3']
    const where = new Map<string, string>()
    for (const key of tracked) {
      master.servers.set(key, { key, target: upA.target })
      where.set(key, 'A')
      const p = await probe(port, key)
      if (p.body !== 'A') problems.push(`tracked key ${key} did not resolve at first: ${p.status} ${p.code}`)
    }
    const seen = async (key: string, want: string, ms: number): Promise<Probe> => {
      const deadline = performance.now() + ms
      for (;;) {
        const p = await probe(port, key)
        if (p.body === 'C') problems.push(`key ${key} went to C, the target of an event that must be ignored`)
        if ((p.status === 200 && p.body === want) || performance.now() > deadline) return p
        await new Promise((r) => setTimeout(r, 5))
      }
    }
    for (let n = 0; n < STREAM_CASES && problems.length < 20; n++) {
      const rng = caseRng(22, n)
      if (chance(rng, 0.06)) {
        // The next connection is refused in some way; the client backs off and comes back.
        master.connectFaults.push(pick(rng, ['status-500', 'html', 'close-at-once', 'no-body', 'stall'] as const))
        master.stream?.destroy()
      }
      const res = await master.liveStream(3000)
      if (res === null) {
        problems.push(`stream case ${n}: the client did not reconnect its event stream within 3 s (${JSON.stringify(client.state())})`)
        break
      }
      const key = pick(rng, tracked)
      const to = where.get(key) === 'A' ? upB : upA
      const lines: string[] = []
      const steps: string[] = []
      for (let k = int(rng, 4); k > 0; k--) lines.push(...junkLines(rng, tracked, upC.target, n))
      const frame = master.put({ key, target: to.target })
      // The valid event, sometimes with its JSON split over two data lines (joined by "\n").
      if (chance(rng, 0.2)) {
        const data = frame[1].slice('data: '.length)
        const comma = data.indexOf(',')
        lines.push(frame[0], `data: ${data.slice(0, comma + 1)}`, `data:${data.slice(comma + 1)}`, '')
      } else {
        lines.push(...(chance(rng, 0.2) ? [frame[0], 'event: message', frame[1]] : frame), '')
      }
      for (let k = int(rng, 3); k > 0; k--) lines.push(...junkLines(rng, tracked, upC.target, n))
      const ending = pick(rng, ['\n', '\r\n', '\r', 'mixed'] as const)
      steps.push(`${lines.length} lines, ending ${JSON.stringify(ending)}`)
      await writePieces(rng, res, sseText(rng, lines, ending))
      const end = weighted(rng, [[80, 'keep'], [5, 'end'], [5, 'destroy'], [5, 'reset'], [2, 'stall']] as const)
      steps.push(end)
      if (end === 'end') res.end()
      else if (end === 'destroy') res.destroy()
      else if (end === 'reset') res.socket?.resetAndDestroy()
      else if (end === 'stall') master.retire()
      where.set(key, bodyOf.get(to.target)!)
      const p = await seen(key, where.get(key)!, 3000)
      if (p.body !== where.get(key)) problems.push(`stream case ${n} (${steps.join(', ')}): ${key} still answers ${p.status} ${p.code ?? ''} ${clip(p.body, 40)}, not ${where.get(key)}, 3 s after a valid event (${JSON.stringify(client.state())})`)
      // The other keys too: an event that should have been ignored moves one to C until its
      // next valid event (A or B in passing is fine: a replay after a reconnect goes through
      // older versions on its way to the newest).
      for (const other of tracked) {
        const q = await probe(port, other)
        if (q.body === 'C') problems.push(`stream case ${n} (${steps.join(', ')}): ${other} went to C, the target of an event that must be ignored`)
        if (q.status !== 200) problems.push(`stream case ${n} (${steps.join(', ')}): ${other} answers ${q.status} ${q.code ?? ''}`)
      }
    }

    // A line without end is refused, not buffered: the client drops the stream early.
    const res = await master.liveStream(3000)
    if (res !== null) {
      res.write('data: ')
      await master.writeEndless(res)
      const written = master.cutOffAt[master.cutOffAt.length - 1]
      if (written >= CUT_OFF_BYTES) problems.push(`an endless event stream line was read for ${written} bytes`)
      if (!/longer than/.test(client.state().lastStreamError ?? '')) problems.push(`the stream error after an endless line: ${client.state().lastStreamError}`)
    }

    // The master is sane again: every key resolves, and events flow.
    master.lookupModes.clear()
    for (const c of cases.filter((x) => x.expect === 'unavailable').slice(0, 20)) {
      const p = await probe(port, c.key)
      if (p.status !== 200 || p.body !== 'A') problems.push(`after recovery, ${c.key} (once ${c.mode}) answers ${p.status} ${p.code ?? ''}`)
    }
    const live = await master.liveStream(3000)
    if (live === null) problems.push('after recovery, no event stream')
    else {
      live.write(`${master.put({ key: tracked[0], target: upB.target }).join('\n')}\n\n`)
      const p = await seen(tracked[0], 'B', 3000)
      if (p.body !== 'B') problems.push(`after recovery, an event was not applied: ${p.status} ${p.code ?? ''}`)
    }
    const state = client.state()
    const elapsed = Math.round(performance.now() - started)
    expect(problems.slice(0, 12), `seed ${SEED}: ${problems.length} broken invariant(s) (lookups ${lookupMs} ms, all ${elapsed} ms); replay with FUZZ_SEED=${SEED}`).toEqual([])
    expect(gw.readiness(), `seed ${SEED}: readiness after recovery`).toEqual({ ready: true, reasons: [] })
    // The fuzz reached what it meant to: bad events skipped, streams dropped and resumed.
    expect(state.eventErrors, `seed ${SEED}: events skipped`).toBeGreaterThan(STREAM_CASES / 4)
    expect(state.streamErrors, `seed ${SEED}: streams dropped`).toBeGreaterThan(3)
    expect(state.lookupErrors, `seed ${SEED}: failed lookups`).toBeGreaterThan(LOOKUP_CASES / 4)
  })
})

// =============================================================================================
// Part 3: config files
// =============================================================================================

const CONFIG_CASES = Math.round(2000 * SCALE)
/** Accepted configs started for real (in a heap-limited child process), beside one per field given a boundary value. */
const START_SAMPLE = 6
const START_BOUND_MS = 3000

interface ConfigCase {
  readonly n: number
  readonly bytes: Buffer
  readonly label: string
  /** The field a boundary value was put in (the sample of starts takes one config per field), or null. */
  readonly boundary: string | null
}

const BOUNDARY_VALUES = [0, 1, -1, 2 ** 20, 2 ** 31 - 1, 2 ** 31, 2 ** 32, 1e9, Number.MAX_SAFE_INTEGER]

function makeConfigCase(n: number, base: unknown): ConfigCase {
  const rng = caseRng(3, n)
  let value = base
  let raw: Record<string, string> = {}
  const steps: string[] = []
  let boundary: string | null = null
  const count = n === 0 ? 0 : 1 + int(rng, chance(rng, 0.3) ? 3 : 1)
  let k = 0
  if (count > 0 && chance(rng, 0.15)) {
    // A number at or past a bound, in a field that holds a number: what the schema accepts there
    // must be something the gateway can start with.
    value = clone(value)
    const numbers = nodePaths(value).filter((p) => typeof getAt(value, p) === 'number')
    const at = pick(rng, numbers)
    const v = pick(rng, BOUNDARY_VALUES)
    setAt(value, at, v)
    boundary = showPath(at)
    steps.push(`${boundary} = ${v} (a boundary)`)
    k++
  }
  for (; k < count && chance(rng, 0.75); k++) {
    // Value mutations on a strict value only: after a raw one (duplicate key, deep nesting,
    // number text), the text is final.
    const [what, next, r] = mutateValue(rng, value, { values: CONFIG_VALUES })
    steps.push(what)
    value = next
    if (Object.keys(r).length > 0) {
      raw = r
      k++
      break
    }
  }
  let bytes: Buffer = Buffer.from(serialize(value, raw, chance(rng, 0.7)), 'utf8')
  for (; k < count; k++) {
    const [what, next] = mutateBytes(rng, bytes)
    steps.push(what)
    bytes = next
  }
  return { n, bytes, boundary, label: steps.join('; ') || 'unmutated' }
}

/** The documented keys (README "Configuration", the contract's example), by where they may appear. */
const KNOWN_KEYS: Readonly<Record<string, readonly string[]>> = {
  '': ['listeners', 'upstreams', 'routes', 'workspaces', 'admin', 'timeouts', 'limits', 'stateFile', 'workers', 'accessLog'],
  'listeners[]': ['name', 'port', 'host', 'workspacesOnly', 'tls', 'redirectToHttps', 'proxyProtocol'],
  'listeners[].redirectToHttps': ['port', 'permanent'],
  'listeners[].proxyProtocol': ['trustedProxies'],
  'listeners[].tls': ['cert', 'key', 'sni'],
  'listeners[].tls.sni[]': ['hosts', 'cert', 'key'],
  'upstreams.*': ['targets', 'balance', 'maxFails', 'cooldownMs', 'healthCheck', 'errorPage'],
  'upstreams.*.healthCheck': ['path', 'intervalMs', 'timeoutMs', 'expectStatus'],
  'routes[]': ['id', 'host', 'pathPrefix', 'upstream', 'targets', 'allowHttp'],
  workspaces: ['hostSuffix', 'stripCookies', 'registry'],
  'workspaces.registry': ['url', 'token', 'cacheSize', 'cacheTtlMs', 'negativeTtlMs', 'staleIfErrorMs'],
  admin: ['host', 'port', 'token', 'tokenFile', 'allowMetadataTargets'],
  timeouts: ['connectMs', 'headersMs', 'responseMs', 'tunnelIdleMs', 'shutdownGraceMs', 'keepAliveMs', 'upstreamIdleMs', 'clientReadMs'],
  limits: ['maxHeaderBytes', 'maxHeaderCount', 'maxBodyBytes', 'maxConnections', 'maxConnectionsPerClient'],
  accessLog: ['enabled', 'path'],
}

/** Keys of `v` that no documented place allows ("unknown keys are errors"). */
function unknownKeys(v: unknown, pattern = '', path = '$', out: string[] = []): string[] {
  if (Array.isArray(v)) v.forEach((x, i) => unknownKeys(x, `${pattern}[]`, `${path}[${i}]`, out))
  else if (isObj(v)) {
    for (const k of Object.keys(v)) {
      // `upstreams` is a map: its keys are names, their values upstreams.
      if (pattern !== 'upstreams' && !(KNOWN_KEYS[pattern] ?? []).includes(k)) out.push(`${path}.${k}`)
      unknownKeys(v[k], pattern === 'upstreams' ? 'upstreams.*' : pattern === '' ? k : `${pattern}.${k}`, `${path}.${k}`, out)
    }
  }
  return out
}

/** validate.ts's rendering of a bad value ("got ..."), for checking that a message names it. */
function shown(v: unknown): string {
  const text = JSON.stringify(v)
  return text.length > 60 ? `${text.slice(0, 57)}...` : text
}

/** The problems with one config's verdict: a ConfigError, or a config; never anything else. */
function configVerdictProblems(c: ConfigCase, verdict: { config: unknown } | { issues: readonly ConfigIssue[] } | { thrown: unknown }, dir: string): string[] {
  const problems: string[] = []
  if ('thrown' in verdict) {
    const err = verdict.thrown as Error
    return [`threw ${err?.constructor?.name ?? typeof err}: ${clip(String(err?.message ?? err), 200)}`]
  }
  const oracle = strictJson(c.bytes)
  if ('config' in verdict) {
    if (!oracle.ok) return [`accepted bytes that are not strict JSON (${oracle.why})`]
    const unknown = unknownKeys(oracle.value)
    if (unknown.length > 0) problems.push(`accepted unknown keys: ${unknown.join(', ')}`)
    if (!Object.isFrozen(verdict.config)) problems.push('the accepted config is not frozen')
    // What was accepted, written back out, is accepted as the same config.
    const again = parseConfig(JSON.parse(JSON.stringify(verdict.config)), dir)
    if (!('config' in again) || JSON.stringify(again.config) !== JSON.stringify(verdict.config)) problems.push(`the accepted config, written out, reads differently: ${clip(JSON.stringify('errors' in again ? again.errors : again.config), 200)}`)
    return problems
  }
  const issues = verdict.issues
  if (issues.length === 0) problems.push('a ConfigError with no issue')
  const merged = oracle.ok ? applyDefaults(oracle.value) : undefined
  for (const issue of issues) {
    const where = `${JSON.stringify(issue.path)}: ${clip(issue.message, 160)}`
    if (issue.message.trim() === '' || /\n\s+at /.test(issue.message)) problems.push(`an empty message or a stack trace: ${where}`)
    if (!oracle.ok) continue
    if (issue.path === '') {
      // Deeper nesting than any config has is refused as a whole, if it really is that deep.
      const bound = /nested deeper than (\d+) levels/.exec(issue.message)
      if (bound !== null ? nestingDepth(c.bytes.toString('utf8')) <= Number(bound[1]) : isObj(oracle.value)) problems.push(`a whole-file problem with a JSON object: ${where}`)
      continue
    }
    const path = parsePath(issue.path)
    if (path === null) {
      problems.push(`a path that is no JSON path: ${where}`)
      continue
    }
    if (!parentExists(merged, path)) {
      problems.push(`a path that is not in the config: ${where}`)
      continue
    }
    const v = getAt(merged, path)
    const primitive = v === null || ['string', 'number', 'boolean'].includes(typeof v)
    const last = path[path.length - 1]
    // A problem with the key itself (unknown, or no name) names the key.
    const namesKey = issue.message.includes(JSON.stringify(String(last)))
    if (primitive && !namesKey && !issue.message.includes(shown(v).slice(0, 40))) problems.push(`a message that does not name the bad value ${shown(v)}: ${where}`)
  }
  if (!oracle.ok) {
    // Not JSON as the RFC has it: a problem says so (the first one in the text, whichever it
    // is), and bytes that are not UTF-8 are named as such wherever they are.
    const named = oracle.why === 'not UTF-8' ? /UTF-8/ : /^invalid JSON at line \d+, column \d+: |^duplicate key "/
    if (!issues.some((i) => named.test(i.message))) problems.push(`bytes that are not strict JSON (${oracle.why}) refused without saying so: ${clip(JSON.stringify(issues), 200)}`)
    const number = /^number (\S+) out of range$/.exec(oracle.why)
    if (number !== null && issues.some((i) => / got null$/.test(i.message))) problems.push(`${number[1]} reported as null: ${clip(JSON.stringify(issues), 200)}`)
  }
  return problems
}

/** A config the gateway accepted, made to start here: its addresses, files and registry pointed at this test's own. */
function startable(config: any, dir: string, n: number, tls: { cert: string; key: string }): Obj {
  const c = JSON.parse(JSON.stringify(config))
  const own = join(dir, `start-${n}`)
  c.listeners = c.listeners.map((l: any) => ({
    ...l, host: '127.0.0.1', port: 0,
    ...(l.tls ? { tls: { ...tls, ...(l.tls.sni ? { sni: l.tls.sni.map((s: any) => ({ ...s, ...tls })) } : {}) } } : {}),
  }))
  c.admin = { ...c.admin, host: '127.0.0.1', port: 0, tokenFile: c.admin.tokenFile === null ? null : join(dir, 'token') }
  c.stateFile = join(own, 'state.json')
  c.accessLog = { ...c.accessLog, path: c.accessLog.path === null ? null : join(own, 'access.log') }
  for (const up of Object.values(c.upstreams) as any[]) if (typeof up.errorPage === 'string') up.errorPage = join(dir, 'maintenance.html')
  c.workspaces.registry.url = null // the master is not part of this test
  return c
}

/**
 * Starts and closes a gateway on each config it is sent. A process of its own: a config can
 * make the start abort the whole process (V8 "invalid table size"), which no worker thread
 * survives and no terminate() interrupts.
 */
const START_CHILD = `
const [{ parseConfig }, { Gateway }] = await Promise.all([import(process.env.LOAD_URL), import(process.env.GATEWAY_URL)])
process.on('message', async ({ n, raw, baseDir }) => {
  try {
    const parsed = parseConfig(raw, baseDir)
    if ('errors' in parsed) return process.send({ n, error: 'refused once made startable: ' + JSON.stringify(parsed.errors) })
    const gw = await Gateway.start({ config: parsed.config, file: baseDir + '/gateway.json', baseDir }, { log: () => {}, env: {} })
    await gw.close()
    process.send({ n, error: null })
  } catch (err) {
    process.send({ n, error: String((err && err.stack) || err) })
  }
})
process.send({ ready: true })
`

/** Starts (and closes) a gateway on each config in a child process: heap-limited, and killed when it takes too long. */
async function startEach(configs: readonly { n: number; raw: Obj; label: string }[], dir: string): Promise<string[]> {
  const problems: string[] = []
  const script = join(dir, 'start-child.mjs')
  writeFileSync(script, START_CHILD)
  const env = {
    ...process.env,
    LOAD_URL: pathToFileURL(join(COMPILED_CLI_DIR, 'config/load.js')).href,
    GATEWAY_URL: pathToFileURL(join(COMPILED_CLI_DIR, 'gateway.js')).href,
  }
  let child: ChildProcess | null = null
  let stderr = ''
  const spawn = async (): Promise<ChildProcess> => {
    stderr = ''
    const c = fork(script, [], { env, execArgv: ['--max-old-space-size=384'], stdio: ['ignore', 'ignore', 'pipe', 'ipc'] })
    c.stderr?.on('data', (d: Buffer) => { stderr = (stderr + d.toString()).slice(-2000) })
    await new Promise<void>((resolve, reject) => {
      c.once('message', () => resolve())
      c.once('exit', (code, signal) => reject(new Error(`the start process exited (${code ?? signal}): ${stderr}`)))
    })
    return c
  }
  for (const c of configs) {
    child ??= await spawn()
    const proc = child
    const verdict = await new Promise<string | null>((resolve) => {
      const done = (v: string | null): void => {
        clearTimeout(timer)
        proc.off('message', onMessage)
        proc.off('exit', onExit)
        resolve(v)
      }
      const timer = setTimeout(() => done(`no start within ${START_BOUND_MS} ms`), START_BOUND_MS)
      const onMessage = (m: { n: number; error: string | null }): void => { if (m.n === c.n) done(m.error) }
      const onExit = (code: number | null, signal: string | null): void => done(`the start killed the process (${code ?? signal}): ${stderr.split('\n').find((l) => /FATAL|Error/.test(l)) ?? stderr.slice(0, 200)}`)
      proc.on('message', onMessage)
      proc.on('exit', onExit)
      proc.send({ n: c.n, raw: c.raw, baseDir: dir })
    })
    if (verdict !== null) {
      problems.push(`config case ${c.n} (${c.label}) passes the check but does not start: ${clip(verdict, 300)}`)
      proc.kill('SIGKILL')
      child = null
    }
  }
  child?.kill()
  return problems
}

describe('seeded control-plane fuzzing: config files', () => {
  it(`checks ${CONFIG_CASES} mutated configs (seed ${SEED}): a ConfigError naming every problem's path and value, or a config that starts`, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gw-control-fuzz-'))
    scope.defer(() => rmSync(dir, { recursive: true, force: true }))
    const base = JSON.parse(readFileSync(join(repoRoot, 'gateway.config.json'), 'utf8')) as unknown
    const file = join(dir, 'gateway.json')
    const problems: string[] = []
    const accepted: { c: ConfigCase; config: unknown }[] = []
    const rejected: ConfigCase[] = []
    const cliCases: { c: ConfigCase; verdict: { config: unknown } | { issues: readonly ConfigIssue[] } }[] = []
    const started = performance.now()
    for (let n = 0; n < CONFIG_CASES && problems.length < 30; n++) {
      const c = makeConfigCase(n, base)
      let verdict: { config: unknown } | { issues: readonly ConfigIssue[] } | { thrown: unknown }
      try {
        verdict = { config: (await loadConfigFile(file, async () => c.bytes)).config }
      } catch (err) {
        verdict = err instanceof ConfigError ? { issues: err.issues } : { thrown: err }
      }
      for (const p of configVerdictProblems(c, verdict, dir)) problems.push(`config case ${n} (${c.label}): ${p}`)
      // The schema itself, on the value JSON.parse makes of the same bytes (its nesting unbounded):
      // the same verdict as the file's, or issues, never an exception.
      const text = c.bytes.toString('utf8')
      let value: unknown
      try { value = JSON.parse(text) } catch { value = undefined }
      if (value !== undefined) {
        try {
          const direct = parseConfig(value, dir)
          if ('config' in verdict && !('config' in direct)) problems.push(`config case ${n} (${c.label}): parseConfig refuses what the file load accepted: ${clip(JSON.stringify(direct.errors), 200)}`)
          if ('errors' in direct && direct.errors.some((e) => e.message.trim() === '')) problems.push(`config case ${n} (${c.label}): parseConfig gave an empty message`)
        } catch (err) {
          problems.push(`config case ${n} (${c.label}): parseConfig threw ${(err as Error).constructor.name}: ${clip((err as Error).message)}`)
        }
      }
      if ('config' in verdict) accepted.push({ c, config: verdict.config })
      else rejected.push(c)
      if (!('thrown' in verdict) && n % 32 === 0) cliCases.push({ c, verdict })
    }
    const loadMs = Math.round(performance.now() - started)

    // `gateway check` says the same, in process and as the compiled command: `FILE: path:
    // message` lines and exit 1, or `ok: FILE` and exit 0; never a stack trace.
    const expectedRun = (name: string, verdict: { config: unknown } | { issues: readonly ConfigIssue[] }) => ('config' in verdict
      ? { code: 0, out: [`ok: ${name}`], err: [] as string[] }
      : { code: 1, out: [] as string[], err: formatIssues(name, verdict.issues) })
    for (const { c, verdict } of cliCases) {
      const name = `check-${c.n}.json`
      writeFileSync(join(dir, name), c.bytes)
      let run: unknown
      try {
        run = await runCaptured(['check', '--config', name], dir)
      } catch (err) {
        run = `threw ${(err as Error).message}`
      }
      if (JSON.stringify(run) !== JSON.stringify(expectedRun(name, verdict))) problems.push(`gateway check on config case ${c.n} (${c.label}): ${clip(JSON.stringify(run), 300)}`)
    }
    const spawned = [
      cliCases.find(({ verdict }) => 'config' in verdict),
      ...[/nested/, /invalid UTF-8|\\xff/, /1e400|12345678901234567890/, /duplicate key/, /truncate/].map((re) => cliCases.find(({ c }) => re.test(c.label))),
    ].filter((x) => x !== undefined)
    await Promise.all(spawned.map(async ({ c, verdict }) => {
      const name = `check-${c.n}.json`
      const run = await promisify(execFile)(process.execPath, [COMPILED_CLI, 'check', '--config', name], { cwd: dir }).then(
        ({ stdout, stderr }) => ({ code: 0, stdout, stderr }),
        (err: { code?: number; stdout?: string; stderr?: string }) => ({ code: err.code ?? -1, stdout: err.stdout ?? '', stderr: err.stderr ?? '' }),
      )
      const want = expectedRun(name, verdict)
      const lines = (s: string): string[] => (s === '' ? [] : s.replace(/\n$/, '').split('\n'))
      const got = { code: run.code, out: lines(run.stdout), err: lines(run.stderr) }
      if (JSON.stringify(got) !== JSON.stringify(want)) problems.push(`the compiled gateway check on config case ${c.n} (${c.label}): ${clip(JSON.stringify(got), 400)}`)
    }))

    // What passes the check starts: the seeded sample, boundary values first.
    const { cert, key } = await createCertificates({ outDir: join(dir, 'tls'), hosts: ['localhost'] })
    writeFileSync(join(dir, 'token'), 'a-token\n')
    writeFileSync(join(dir, 'maintenance.html'), '<p>down</p>')
    const sampleRng = caseRng(33, 0)
    const byField = new Map<string, (typeof accepted)[number]>()
    for (const x of accepted) if (x.c.boundary !== null && !byField.has(x.c.boundary)) byField.set(x.c.boundary, x)
    const sample = [
      ...byField.values(),
      ...accepted.filter((x) => x.c.boundary === null).map((x) => [sampleRng(), x] as const).sort(([a], [b]) => a - b).slice(0, START_SAMPLE).map(([, x]) => x),
    ]
    problems.push(...await startEach(sample.map(({ c, config }) => ({ n: c.n, label: c.label, raw: startable(config, dir, c.n, { cert, key }) })), dir))

    const elapsed = Math.round(performance.now() - started)
    expect(problems.slice(0, 12), `seed ${SEED}: ${problems.length} broken invariant(s) (${accepted.length} accepted, ${rejected.length} refused; loads ${loadMs} ms, all ${elapsed} ms); replay with FUZZ_SEED=${SEED}`).toEqual([])
    expect(accepted.length, `seed ${SEED}: accepted configs`).toBeGreaterThan(CONFIG_CASES / 10)
    expect(rejected.length, `seed ${SEED}: refused configs`).toBeGreaterThan(CONFIG_CASES / 3)
    expect(spawned.length, `seed ${SEED}: configs run through the compiled command`).toBeGreaterThanOrEqual(3)
    expect(byField.size, `seed ${SEED}: fields started with a boundary value`).toBeGreaterThan(10)
  })
})

// =============================================================================================
// What the fuzz found, each reduced to the request or file that shows it. Case numbers are those
// of the run that found the bug (seed 0xc07ea1); the fuzz has grown since.
// =============================================================================================

describe('what the control-plane fuzz found', () => {
  async function adminGateway(): Promise<AdminGateway> {
    const dir = mkdtempSync(join(tmpdir(), 'gw-control-fuzz-'))
    scope.defer(() => rmSync(dir, { recursive: true, force: true }))
    writeFileSync(join(dir, 'gateway.json'), JSON.stringify(adminConfig(dir)))
    const a = await startAdminGateway(dir)
    scope.defer(() => a.gw.close())
    return a
  }

  /** One raw request (head lines after the request line, then `body`), and its one answer. */
  async function send(a: AdminGateway, requestLine: string, fields: string[], body = '', fin = false): Promise<ParsedAnswer> {
    const head = [requestLine, `Host: 127.0.0.1:${a.port}`, `Authorization: Bearer ${TOKEN}`, ...fields, 'Connection: close']
    const answer = await rawExchange(a.port, Buffer.concat([Buffer.from(`${head.join('\r\n')}\r\n\r\n`, 'latin1'), Buffer.from(body, 'latin1')]), fin)
    const parsed = parseAnswer(answer.raw, requestLine.split(' ')[0])
    if (typeof parsed === 'string') throw new Error(parsed)
    return parsed
  }

  const withLength = (body: string): string[] => [`Content-Length: ${Buffer.byteLength(body, 'latin1')}`]

  /** Once every change queued before it (route changes, reloads, state file writes) has run. */
  async function settled(a: AdminGateway): Promise<Snapshot> {
    await call(a.port, 'DELETE', '/routes/none') // 404, answered in turn after them
    await a.gw.store.idle()
    return snapshot(a)
  }

  // Seed 0xc07ea1, cases 875, 944, 1062: a route field nested 20 000 deep. Validation rendered the
  // bad value with JSON.stringify, which overflowed the stack: 500 "the change could not be saved:
  // Maximum call stack size exceeded". Config files went the same way in the parser itself
  // (config cases 122, 191, ...: `gateway check` died with a RangeError and its stack).
  it('answers 400, not 500, to an admin body nested thousands of levels deep, and changes nothing', async () => {
    const a = await adminGateway()
    const before = await snapshot(a)
    const body = `{"routes":[{"id":"a","upstream":"master","host":${deepText(20_000, 'array')}}]}`
    const res = await send(a, 'PUT /routes HTTP/1.1', withLength(body), body)
    expect({ status: res.status, paths: res.json.errors.map((e: ConfigIssue) => e.path) }).toEqual({ status: 400, paths: [''] })
    expect(await settled(a)).toEqual(before)
  })

  it('reports a value nested too deep for JSON.stringify as a problem at its path, not an exception', () => {
    const deep = JSON.parse(`{"workers":${deepText(50_000, 'array')}}`) as unknown
    expect(parseConfig(deep, '/srv/gw')).toEqual({ errors: [{ path: 'workers', message: expect.any(String) }] })
  })

  it('exits 1 naming the line, not with a stack trace, when gateway check reads a config nested thousands of levels deep', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gw-control-fuzz-'))
    scope.defer(() => rmSync(dir, { recursive: true, force: true }))
    writeFileSync(join(dir, 'deep.json'), `{"routes":${deepText(5000, 'array')}}`)
    const run = await runCaptured(['check', '--config', 'deep.json'], dir)
    expect({ code: run.code, out: run.out, err: run.err }).toEqual({ code: 1, out: [], err: [expect.stringMatching(/^deep\.json: invalid JSON at line 1, column \d+: /)] })
  })

  // The start sample, every seed that puts 2^31 - 1 (or 1e9, 2^32, ...) in cacheSize: `gateway
  // check` said ok, and the start ran out of heap allocating the LRU's index (a fatal V8 error
  // after 4-8 s, not an exception).
  it('refuses a route cache too large to allocate, which passed the check and then could not start', () => {
    expect(parseConfig({ workspaces: { registry: { cacheSize: 2 ** 31 - 1 } } }, '/srv/gw')).toEqual({
      errors: [{ path: 'workspaces.registry.cacheSize', message: expect.stringContaining('2147483647') }],
    })
    expect(parseConfig({ workspaces: { registry: { cacheSize: 1_000_000 } } }, '/srv/gw')).toHaveProperty('config')
  })

  // Config cases 1226, 629, ...: `"cacheSize": 1e400` was reported as "got null".
  it('names a number too large for a double as written, not as null', async () => {
    await expect(loadConfigFile('/srv/gw/gateway.json', async () => Buffer.from('{"limits": {"maxBodyBytes": 1e400}}')))
      .rejects.toMatchObject({ issues: [{ path: '', message: expect.stringContaining('1e400') }] })
  })

  // Config cases 556, 1799, 2221: a byte that is not UTF-8 in a file path became U+FFFD, and
  // the config was accepted with a path the operator never wrote.
  it('refuses a config file that is not UTF-8, naming the byte, instead of running on U+FFFD', async () => {
    const bytes = Buffer.concat([Buffer.from('{"stateFile": "data/caf'), Buffer.from([0xe9]), Buffer.from('.json"}')])
    await expect(loadConfigFile('/srv/gw/gateway.json', async () => bytes))
      .rejects.toMatchObject({ issues: [{ path: '', message: expect.stringMatching(/line 1, column 24: byte 0xe9 is not UTF-8/) }] })
  })

  // Seed 0xc07ea1, 13 cases (`duplicate key ".target"`, `".targets"`, ...): JSON.parse kept the
  // last of two duplicate keys and the change went through on it; `gateway routes apply` and
  // config files refuse the same bytes. Case 675: a workspaceId with a byte that is not UTF-8
  // was stored as U+FFFD.
  it.each([
    ['PUT /servers/k', '{"target":"node1:1","target":"node2:2"}', 'target'],
    ['PUT /routes/a', '{"targets":["127.0.0.1:1"],"upstream":"master","targets":["127.0.0.1:2"]}', 'targets'],
    ['PUT /routes', '{"routes":[{"id":"a","upstream":"master","id":"b"}]}', 'routes[0].id'],
    ['PUT /servers/k', '{"target":"node1:1","workspaceId":"w\xff"}', ''],
  ])('refuses %s with %s (not strict JSON) at %j, and changes nothing', async (call_, body, path) => {
    const a = await adminGateway()
    const before = await snapshot(a)
    const res = await send(a, `${call_} HTTP/1.1`, withLength(body), body)
    expect({ status: res.status, paths: res.json.errors.map((e: ConfigIssue) => e.path) }).toEqual({ status: 400, paths: [path === '' && call_.includes('servers') ? '$' : path] })
    expect(await settled(a)).toEqual(before)
  })

  // Seed 0xc07ea1, cases 33, 56 (and every DELETE cut short): a request whose body never came
  // whole was answered 400 by node's parser, while the handler, which reads no body, had already
  // reloaded or deleted: a change made for a request its client was told failed.
  it.each(['POST /reload', 'DELETE /routes/a', 'DELETE /servers/k'])('changes nothing for %s with a body cut short, and says so in the errors shape', async (what) => {
    const a = await adminGateway()
    await call(a.port, 'PUT', '/routes/a', { upstream: 'master', pathPrefix: '/a' })
    await call(a.port, 'PUT', '/servers/k', { target: 'node1:1' })
    const before = await snapshot(a)
    const res = await send(a, `${what} HTTP/1.1`, ['Content-Length: 10'], 'abc', true)
    expect({ status: res.status, paths: res.json.errors.map((e: ConfigIssue) => e.path) }).toEqual({ status: 400, paths: [''] })
    expect(await settled(a)).toEqual(before)
  })

  // 105 cases of seed 0xc07ea1: node's own bare "400 Bad Request" (or 431) with no body, for
  // framing its parser refuses, and for a request without Host (which the Host gate answers 403).
  it.each([
    ['Content-Length and chunked', 'PUT /routes HTTP/1.1', ['Content-Length: 5', 'Transfer-Encoding: chunked'], '0\r\n\r\n', 400, ''],
    ['a bad chunk size', 'PUT /routes HTTP/1.1', ['Transfer-Encoding: chunked'], 'zz\r\n{}\r\n0\r\n\r\n', 400, ''],
    ['a head over 16 KiB', 'GET /routes HTTP/1.1', [`X-Long: ${'l'.repeat(20_000)}`], '', 431, ''],
  ])('answers %s in the errors shape', async (_what, line, fields, body, status, path) => {
    const a = await adminGateway()
    const res = await send(a, line, fields, body)
    expect({ status: res.status, paths: res.json.errors.map((e: ConfigIssue) => e.path) }).toEqual({ status, paths: [path] })
  })

  it('answers a request without Host 403 at path Host, as any Host that does not name the listener', async () => {
    const a = await adminGateway()
    const answer = await rawExchange(a.port, Buffer.from(`GET /routes HTTP/1.1\r\nAuthorization: Bearer ${TOKEN}\r\nConnection: close\r\n\r\n`), false)
    const res = parseAnswer(answer.raw, 'GET') as ParsedAnswer
    expect({ status: res.status, paths: res.json.errors.map((e: ConfigIssue) => e.path) }).toEqual({ status: 403, paths: ['Host'] })
  })

  it('answers a whole request followed by bytes that are not HTTP, then closes, rather than answer 400 for a change it made', async () => {
    const a = await adminGateway()
    await call(a.port, 'PUT', '/routes/a', { upstream: 'master', pathPrefix: '/a' })
    const res = await send(a, 'DELETE /routes/a HTTP/1.1', ['X-Note: junk follows'], 'this is not a request\r\n\r\n')
    expect(res.status).toBe(200)
    expect(adminRoutesOf(await settled(a))).toEqual([])
  })

  // Cases 619 and 1269 of the config fuzz, seen on PUT /routes/{id} and PUT /routes: an error
  // path outside the body ("routes[0][\" pathPrefix\"]" for a single route) or no JSON path at all
  // ("targets " for an unknown top-level key).
  it.each([
    ['PUT /routes/a', '{"upstream":"master"," pathPrefix":"/x"}', '[" pathPrefix"]'],
    ['PUT /routes', '{"routes":[],"targets ":1}', '["targets "]'],
  ])('names an odd key of %s at a JSON path into the body', async (call_, body, path) => {
    const a = await adminGateway()
    const res = await send(a, `${call_} HTTP/1.1`, withLength(body), body)
    expect({ status: res.status, paths: res.json.errors.map((e: ConfigIssue) => e.path) }).toEqual({ status: 400, paths: [path] })
  })

  // Seed 0xc07ea1, admin cases 228 and 284: PUT /routes/a giving route a the host and prefix of
  // a later admin route was refused at "routes[2].pathPrefix", a path into a list its caller
  // never sent, saying the other route would never be used.
  it('reports a PUT /routes/{id} that clashes with a later admin route on the route sent, at a path relative to it', async () => {
    const a = await adminGateway()
    await call(a.port, 'PUT', '/routes', { routes: [{ id: 'a', host: 'x.example.com', upstream: 'master' }, { id: 'b', host: 'y.example.com', upstream: 'master' }] })
    const before = await snapshot(a)
    const body = '{"host":"y.example.com","upstream":"master"}'
    const res = await send(a, 'PUT /routes/a HTTP/1.1', withLength(body), body)
    expect({ status: res.status, paths: res.json.errors.map((e: ConfigIssue) => e.path) }).toEqual({ status: 400, paths: ['pathPrefix'] })
    expect(await settled(a)).toEqual(before)
  })

  // Seed 0xc07ea1, lookup cases 3, 6, 46 ("trickle"): a master sending a byte every 100 ms held
  // the workspace request for ever (every client bound is a bound on silence), and, since
  // lookups for one key are shared, every later request for that key too, after the master
  // was sane again.
  it('answers 503 registry_unavailable in bounded time to a lookup the master trickles, and resolves the key once the master is sane', async () => {
    const up = await httpUpstream((_req, res) => res.end('A'))
    scope.defer(() => up.close())
    const master = await HostileMaster.start()
    scope.defer(() => master.close())
    const { port } = await followerGateway(master)
    master.servers.set('7_slow', { key: '7_slow', target: up.target })
    master.lookupModes.set('7_slow', { mode: 'trickle', detail: 0 })
    const slow = await probe(port, '7_slow')
    expect({ status: slow.status, code: slow.code, bounded: slow.ms < LOOKUP_BOUND_MS }).toEqual({ status: 503, code: 'registry_unavailable', bounded: true })
    master.lookupModes.delete('7_slow')
    const again = await probe(port, '7_slow')
    expect({ status: again.status, body: again.body }).toEqual({ status: 200, body: 'A' })
  })
})
