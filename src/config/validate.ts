// The one schema every config passes, at load and at every reload, and that the admin API
// applies to the routes it is given. A schema node knows what a valid value is ("an integer
// from 0 to 65535"); every problem becomes { path, message } with the JSON path and the bad
// value, and all problems are collected, so one `gateway check` run shows them all.

import { isIPv4, isIPv6 } from 'node:net'
import { isPlainObject } from './defaults.js'
import type { ConfigIssue } from './types.js'

export type { ConfigIssue }

interface Context {
  readonly issues: ConfigIssue[]
  readonly allowMetadataTargets: boolean
  /**
   * Whether route ids and path prefixes must keep to their length bounds: false for admin
   * routes stored before the bounds existed, which must still load (and can be deleted).
   */
  lengthBounds: boolean
}

interface Schema {
  /** What a valid value is, as it reads after "must be". */
  readonly expected: string
  check(value: unknown, path: string, ctx: Context): void
}

interface Field {
  readonly schema: Schema
  readonly required: boolean
}

// ---------------------------------------------------------------------------------------------
// Schema building blocks

function integer(min: number, max: number = Number.MAX_SAFE_INTEGER): Schema {
  const expected = max === Number.MAX_SAFE_INTEGER
    ? (min === 1 ? 'a positive integer' : `an integer of at least ${min}`)
    : `an integer from ${min} to ${max}`
  return {
    expected,
    check(value, path, ctx) {
      if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
        report(ctx, path, `must be ${expected}, got ${show(value)}`)
      }
    },
  }
}

const boolean: Schema = {
  expected: 'true or false',
  check(value, path, ctx) {
    if (typeof value !== 'boolean') report(ctx, path, `must be true or false, got ${show(value)}`)
  },
}

/**
 * A non-empty string; `rule` returns what is wrong with it ("must start with \"/\""), or null.
 * `nullable`: null is valid too (the "off" or "use the default" value).
 */
function string(
  expected: string, rule?: (value: string, ctx: Context) => string | null, options: { nullable?: boolean } = {},
): Schema {
  if (options.nullable) expected = `${expected} or null`
  return {
    expected,
    check(value, path, ctx) {
      if (value === null && options.nullable) return
      if (typeof value !== 'string' || value === '') {
        report(ctx, path, `must be ${expected}, got ${show(value)}`)
        return
      }
      const problem = rule?.(value, ctx)
      if (problem) report(ctx, path, `${problem}, got ${show(value)}`)
    },
  }
}

function oneOf(values: readonly (string | number)[], expected = `one of ${values.map(show).join(', ')}`): Schema {
  return {
    expected,
    check(value, path, ctx) {
      if (!values.includes(value as string | number)) report(ctx, path, `must be ${expected}, got ${show(value)}`)
    },
  }
}

function either(a: Schema, b: Schema): Schema {
  const expected = `${a.expected} or ${b.expected}`
  return {
    expected,
    check(value, path, ctx) {
      const issuesA: ConfigIssue[] = []
      a.check(value, path, { ...ctx, issues: issuesA })
      if (issuesA.length === 0) return
      const issuesB: ConfigIssue[] = []
      b.check(value, path, { ...ctx, issues: issuesB })
      if (issuesB.length === 0) return
      report(ctx, path, `must be ${expected}, got ${show(value)}`)
    },
  }
}

/** `expected` names the items: array(target, 'of "host:port" strings') reads "an array of ...". */
function array(items: Schema, of: string, options: { nonEmpty?: boolean } = {}): Schema {
  const expected = `${options.nonEmpty ? 'a non-empty' : 'an'} array ${of}`
  return {
    expected,
    check(value, path, ctx) {
      if (!Array.isArray(value) || (options.nonEmpty && value.length === 0)) {
        report(ctx, path, `must be ${expected}, got ${show(value)}`)
        return
      }
      value.forEach((item, i) => items.check(item, `${path}[${i}]`, ctx))
    },
  }
}

/** A JSON object used as a map (`upstreams`): `keyRule` says what is wrong with a key, or null. */
function record(keyRule: (key: string) => string | null, values: Schema, expected: string): Schema {
  return {
    expected,
    check(value, path, ctx) {
      if (!isPlainObject(value)) {
        report(ctx, path, `must be ${expected}, got ${show(value)}`)
        return
      }
      for (const [key, item] of Object.entries(value)) {
        const keyPath = joinPath(path, key)
        const problem = keyRule(key)
        if (problem) report(ctx, keyPath, `${problem}, got ${show(key)}`)
        values.check(item, keyPath, ctx)
      }
    },
  }
}

function object(expected: string, fields: Record<string, Field>): Schema {
  const known = Object.keys(fields)
  return {
    expected,
    check(value, path, ctx) {
      if (!isPlainObject(value)) {
        report(ctx, path, `must be ${expected}, got ${show(value)}`)
        return
      }
      for (const key of Object.keys(value)) {
        if (Object.hasOwn(fields, key)) continue
        const guess = closest(key, known)
        report(ctx, joinPath(path, key), `unknown key ${show(key)}` +
          (guess ? ` (did you mean ${show(guess)}?)` : ` (known keys: ${known.join(', ')})`))
      }
      for (const [key, field] of Object.entries(fields)) {
        const child = Object.hasOwn(value, key) ? value[key] : undefined
        if (child === undefined) {
          if (field.required) report(ctx, joinPath(path, key), `is required: ${field.schema.expected}`)
          continue
        }
        field.schema.check(child, joinPath(path, key), ctx)
      }
    },
  }
}

const required = (schema: Schema): Field => ({ schema, required: true })
const optional = (schema: Schema): Field => ({ schema, required: false })

// ---------------------------------------------------------------------------------------------
// The config schema

const NAME = /^[A-Za-z0-9._-]+$/
/**
 * Route ids, upstream and listener names end up in logs, metric labels and admin URLs
 * (`PUT /routes/{id}`); without a bound, a megabyte id passed within the admin body limit.
 */
const MAX_NAME_LENGTH = 128
const nameRule = (value: string, ctx?: Context): string | null => {
  if (value.length > MAX_NAME_LENGTH && ctx?.lengthBounds !== false) return `must be at most ${MAX_NAME_LENGTH} characters (it has ${value.length})`
  return NAME.test(value) ? null : 'must use only letters, digits, ".", "_" and "-"'
}

// Timers above 2^31-1 ms overflow in Node (TimeoutOverflowWarning) and fire after 1 ms.
const MAX_TIMER_MS = 2 ** 31 - 1

const port = integer(0, 65535)
const positiveMs = integer(1, MAX_TIMER_MS)
const optionalMs = integer(0, MAX_TIMER_MS)
const positive = integer(1)
const filePath = string('a non-empty file path')
const filePathOrNull = string('a non-empty file path', undefined, { nullable: true })

const bindHost = string('an IP address or host name', (value) =>
  isIPv4(value) || isIPv6(value) || isDnsName(value) ? null : 'must be an IP address or host name to bind')

const hostPattern = string('a host name, an IP address or "*.suffix"', hostPatternProblem)

const target = string('"host:port"', (value, ctx) => targetProblem(value, ctx.allowMetadataTargets))
const targets = array(target, 'of "host:port" strings', { nonEmpty: true })

const tls = object('an object with "cert" and "key" file paths', {
  cert: required(filePath),
  key: required(filePath),
  sni: optional(array(object('an object with "hosts", "cert" and "key"', {
    hosts: required(array(hostPattern, 'of host names or "*.suffix" patterns', { nonEmpty: true })),
    cert: required(filePath),
    key: required(filePath),
  }), 'of SNI certificate objects')),
})

const redirectToHttps = object('an object with the HTTPS "port" and "permanent"', {
  port: optional(integer(1, 65535)),
  permanent: optional(boolean),
})

const proxyProtocol = object('an object with "trustedProxies"', {
  trustedProxies: required(array(string('an IP address or CIDR range', trustedProxyProblem), 'of IP addresses or CIDR ranges', { nonEmpty: true })),
})

const listener = object('a listener object', {
  name: required(string('a non-empty listener name', nameRule)),
  port: required(port),
  host: optional(bindHost),
  workspacesOnly: optional(boolean),
  tls: optional(tls),
  redirectToHttps: optional(redirectToHttps),
  proxyProtocol: optional(proxyProtocol),
})

const healthCheck = object('a health check object with "path"', {
  path: required(string('a request path starting with "/"', (value) => value.startsWith('/') && !/[\s#]/.test(value) ? null : 'must start with "/" and contain no whitespace or "#"')),
  intervalMs: optional(positiveMs),
  timeoutMs: optional(positiveMs),
  expectStatus: optional(integer(100, 599)),
})

const upstream = object('an upstream object with "targets"', {
  targets: required(targets),
  balance: optional(oneOf(['round-robin', 'least-connections'])),
  maxFails: optional(positive),
  cooldownMs: optional(positiveMs),
  healthCheck: optional(healthCheck),
  errorPage: optional(filePathOrNull),
})

const routeId = string('a non-empty route id', nameRule)

const route = object('a route object', {
  id: required(routeId),
  host: optional(hostPattern),
  pathPrefix: optional(string('a path prefix starting with "/"', pathPrefixProblem)),
  upstream: optional(string('an upstream name')),
  targets: optional(targets),
  allowHttp: optional(boolean),
})

const cookieName = string('a cookie name', (value) =>
  /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(value) ? null : 'must be a cookie name (RFC 6265 token)')

// Sent in an Authorization header: no spaces or control characters (CR LF would split it).
const tokenOrNull = string('a non-empty token', (value) =>
  /^[\x21-\x7e]+$/.test(value) ? null : 'must be printable ASCII without spaces', { nullable: true })

/**
 * The route cache's LRU allocates its index for every entry up front (measured on Node 20: 10M
 * entries take 200 MB and 1 s at start, 50M 850 MB and 13 s, and 2^31 - 1 aborts the process,
 * "invalid table size"), so a bigger cacheSize passed `gateway check` and then could not start.
 */
const MAX_CACHE_SIZE = 10_000_000

const registry = object('a registry object', {
  url: required(string('an http(s) URL', urlProblem, { nullable: true })),
  token: required(tokenOrNull),
  cacheSize: required(integer(1, MAX_CACHE_SIZE)),
  cacheTtlMs: required(optionalMs),
  negativeTtlMs: required(optionalMs),
  staleIfErrorMs: required(optionalMs),
})

const configSchema = object('a JSON object', {
  listeners: required(array(listener, 'of listener objects')),
  upstreams: required(record(nameRule, upstream, 'an object of named upstreams')),
  routes: required(array(route, 'of route objects')),
  workspaces: required(object('a workspaces object', {
    hostSuffix: required(string('a host suffix starting with "."', hostSuffixProblem, { nullable: true })),
    stripCookies: required(array(cookieName, 'of cookie names')),
    registry: required(registry),
  })),
  admin: required(object('an admin object', {
    host: required(bindHost),
    port: required(port),
    token: required(tokenOrNull),
    tokenFile: required(filePathOrNull),
    allowMetadataTargets: required(boolean),
  })),
  timeouts: required(object('a timeouts object', {
    connectMs: required(positiveMs),
    headersMs: required(positiveMs),
    responseMs: required(positiveMs),
    tunnelIdleMs: required(positiveMs),
    shutdownGraceMs: required(positiveMs),
    keepAliveMs: required(positiveMs),
    upstreamIdleMs: required(positiveMs),
    clientReadMs: required(positiveMs),
  })),
  limits: required(object('a limits object', {
    maxHeaderBytes: required(positive),
    maxHeaderCount: required(positive),
    maxBodyBytes: required(positive),
    maxConnections: required(positive),
    maxConnectionsPerClient: required(integer(0)),
  })),
  stateFile: required(filePath),
  workers: required(either(integer(1, 1024), oneOf(['auto'], '"auto"'))),
  accessLog: required(object('an accessLog object', {
    enabled: required(boolean),
    path: required(filePathOrNull),
  })),
})

// ---------------------------------------------------------------------------------------------
// Entry points

/** Every problem in a config that already has its defaults applied (config/defaults.ts). */
export function validateConfig(config: unknown): ConfigIssue[] {
  const admin = isPlainObject(config) && isPlainObject(config.admin) ? config.admin : {}
  const ctx: Context = { issues: [], allowMetadataTargets: admin.allowMetadataTargets === true, lengthBounds: true }
  configSchema.check(config, '', ctx)
  if (!isPlainObject(config)) return ctx.issues
  checkListeners(config.listeners, config.admin, ctx)
  const upstreamNames = new Set(isPlainObject(config.upstreams) ? Object.keys(config.upstreams) : [])
  checkRouteSet(config.routes, 'routes', upstreamNames, ctx)
  return ctx.issues
}

/**
 * Every problem in a list of routes, with paths under `pathPrefix` (`routes[3].targets[0]`).
 * Used for the config's routes and for the admin API's `PUT /routes` bodies. Routes may omit
 * `pathPrefix` (default "/").
 */
export function validateRoutes(
  routes: unknown, pathPrefix: string, upstreamNames: ReadonlySet<string>, allowMetadataTargets: boolean,
  /** Routes before this index were stored earlier: they are not held to the length bounds. */
  firstWritten = 0,
): ConfigIssue[] {
  const ctx: Context = { issues: [], allowMetadataTargets, lengthBounds: true }
  if (Array.isArray(routes)) {
    routes.forEach((r, i) => {
      ctx.lengthBounds = i >= firstWritten
      route.check(r, `${pathPrefix}[${i}]`, ctx)
    })
    ctx.lengthBounds = true
  } else {
    array(route, 'of route objects').check(routes, pathPrefix, ctx)
  }
  checkRouteSet(routes, pathPrefix, upstreamNames, ctx)
  return ctx.issues
}

/** Every problem in one route (`PUT /routes/{id}`); `path` prefixes the issue paths ("" for none). */
export function validateRoute(
  value: unknown, path: string, upstreamNames: ReadonlySet<string>, allowMetadataTargets: boolean,
): ConfigIssue[] {
  const ctx: Context = { issues: [], allowMetadataTargets, lengthBounds: true }
  route.check(value, path, ctx)
  checkRoute(value, path, upstreamNames, ctx)
  return ctx.issues
}

/** The problems with a route id on its own (the `{id}` of `/routes/{id}`), at `path`. */
export function validateRouteId(id: unknown, path: string): ConfigIssue[] {
  const ctx: Context = { issues: [], allowMetadataTargets: false, lengthBounds: true }
  routeId.check(id, path, ctx)
  return ctx.issues
}

// ---------------------------------------------------------------------------------------------
// Rules across fields and entries (run after the shape checks, on whatever is well-shaped)

function checkListeners(listeners: unknown, admin: unknown, ctx: Context): void {
  if (!Array.isArray(listeners)) return
  const names = new Map<string, number>()
  const bound: { host: string; port: number; path: string; label: string }[] = []
  listeners.forEach((listener, i) => {
    if (!isPlainObject(listener)) return
    const path = `listeners[${i}]`
    if (typeof listener.name === 'string' && listener.name !== '') {
      const first = names.get(listener.name)
      if (first === undefined) names.set(listener.name, i)
      else report(ctx, `${path}.name`, `duplicate listener name ${show(listener.name)} (also listeners[${first}].name)`)
    }
    if (listener.tls !== undefined && listener.redirectToHttps !== undefined) {
      report(ctx, `${path}.redirectToHttps`, 'must be left out of an HTTPS listener (it has "tls"): its requests would be sent back to itself')
    }
    if (typeof listener.port === 'number' && typeof listener.host === 'string') {
      claimAddress(bound, listener.host, listener.port, `${path}.port`, `listeners[${i}] (${show(listener.name)})`, ctx)
    }
  })
  if (isPlainObject(admin) && typeof admin.port === 'number' && typeof admin.host === 'string') {
    claimAddress(bound, admin.host, admin.port, 'admin.port', 'the admin listener', ctx)
  }
}

/** Two sockets cannot bind overlapping addresses on one port (EADDRINUSE at start). */
function claimAddress(
  bound: { host: string; port: number; path: string; label: string }[],
  host: string, port: number, path: string, label: string, ctx: Context,
): void {
  if (port === 0) return // ephemeral: every bind gets its own port
  const clash = bound.find((b) => b.port === port && addressesOverlap(b.host, host))
  if (clash) report(ctx, path, `${show(`${host}:${port}`)} overlaps ${clash.label} on ${show(`${clash.host}:${port}`)}`)
  else bound.push({ host, port, path, label })
}

function addressesOverlap(a: string, b: string): boolean {
  a = a.toLowerCase()
  b = b.toLowerCase()
  if (a === b) return true
  // "::" is dual-stack in Node (it takes IPv4 too); "0.0.0.0" takes every IPv4 address.
  if (a === '::' || b === '::') return true
  if (a === '0.0.0.0') return !isIPv6(b)
  if (b === '0.0.0.0') return !isIPv6(a)
  return false
}

function checkRouteSet(routes: unknown, path: string, upstreamNames: ReadonlySet<string>, ctx: Context): void {
  if (!Array.isArray(routes)) return
  const ids = new Map<string, number>()
  const matches = new Map<string, number>()
  routes.forEach((r, i) => {
    const routePath = `${path}[${i}]`
    checkRoute(r, routePath, upstreamNames, ctx)
    if (!isPlainObject(r)) return
    if (typeof r.id === 'string' && r.id !== '') {
      const first = ids.get(r.id)
      if (first === undefined) ids.set(r.id, i)
      else report(ctx, `${routePath}.id`, `duplicate route id ${show(r.id)} (also ${path}[${first}].id)`)
    }
    const host = r.host === undefined ? '*' : r.host
    const prefix = r.pathPrefix === undefined ? '/' : r.pathPrefix
    if (typeof host === 'string' && typeof prefix === 'string') {
      const key = `${host.toLowerCase()} ${prefix}`
      const first = matches.get(key)
      if (first === undefined) matches.set(key, i)
      else {
        // Named by id too: for `PUT /routes/{id}` the index is into a list its caller never sent.
        const other = routes[first] as Record<string, unknown>
        report(ctx, `${routePath}.pathPrefix`, `${path}[${first}]${typeof other.id === 'string' ? ` (${show(other.id)})` : ''} already matches host ` +
          `${show(host)} and path prefix ${show(prefix)}, so this route would never be used`)
      }
    }
  })
}

function checkRoute(r: unknown, path: string, upstreamNames: ReadonlySet<string>, ctx: Context): void {
  if (!isPlainObject(r)) return
  const hasUpstream = r.upstream !== undefined
  const hasTargets = r.targets !== undefined
  if (hasUpstream && hasTargets) {
    report(ctx, path, 'must have exactly one of "upstream" and "targets", got both')
  } else if (!hasUpstream && !hasTargets) {
    report(ctx, path, 'must have "upstream" (an upstream name) or "targets" (["host:port", ...]), got neither')
  } else if (typeof r.upstream === 'string' && r.upstream !== '' && !upstreamNames.has(r.upstream)) {
    const known = [...upstreamNames]
    report(ctx, joinPath(path, 'upstream'), `must name an entry of "upstreams", got ${show(r.upstream)}` +
      (known.length ? ` (known: ${known.join(', ')})` : ' (there are none)'))
  }
}

// ---------------------------------------------------------------------------------------------
// String rules: each returns what is wrong, or null

/**
 * A prefix only matches a request target at least as long. RFC 9112 section 3 asks every party
 * to accept request lines of at least 8000 octets; longer ones may be refused anywhere on the way
 * (this gateway refuses a head over limits.maxHeaderBytes, 16 KiB by default, request line and
 * headers together). 8192 keeps every prefix a client can count on reaching. Fixed, not derived
 * from maxHeaderBytes, so that a reload lowering that limit cannot make stored admin routes invalid.
 */
const MAX_PATH_PREFIX_LENGTH = 8192

function pathPrefixProblem(value: string, ctx: Context): string | null {
  if (value.length > MAX_PATH_PREFIX_LENGTH && ctx.lengthBounds) return `must be at most ${MAX_PATH_PREFIX_LENGTH} characters (it has ${value.length})`
  if (!value.startsWith('/')) return 'must start with "/"'
  if (/[?#\s]/.test(value)) return 'must not contain "?", "#" or whitespace'
  return null
}

/** "10.0.0.1", "10.0.0.0/8", "::1", "fd00::/8": who may send a PROXY protocol header. */
function trustedProxyProblem(value: string): string | null {
  const slash = value.indexOf('/')
  const address = slash === -1 ? value : value.slice(0, slash)
  const v4 = isIPv4(address)
  if (!v4 && !(isIPv6(address) && !address.includes('%'))) return 'must be an IP address or a CIDR range ("10.0.0.0/8", "fd00::/8")'
  if (slash === -1) return null
  const bits = value.slice(slash + 1)
  const max = v4 ? 32 : 128
  if (!/^(0|[1-9][0-9]{0,2})$/.test(bits) || Number(bits) > max) return `must have a prefix length from 0 to ${max} after "/"`
  // A range is trusted as its prefix reads: "::ffff:10.0.0.0/8" would be ::/8 (every IPv4
  // peer, mapped), not 10.0.0.0/8. Bits set past the prefix are a mistake, not a shorthand.
  const prefix = Number(bits)
  const words = v4 ? ipv4Words(address) : ipv6Words(address)
  const hostBits = words.some((word, i) => {
    const kept = Math.min(16, Math.max(0, prefix - i * 16))
    return kept < 16 && (word & (0xffff >> kept)) !== 0
  })
  if (!hostBits) return null
  const mapped = !v4 && words.slice(0, 5).every((w) => w === 0) && words[5] === 0xffff && prefix <= 32
  return `has address bits set after its /${prefix} prefix` + (mapped ? ` (an IPv4-mapped range needs 96 more: did you mean "${address}/${96 + prefix}"?)` : '')
}

function hostPatternProblem(value: string): string | null {
  if (value.startsWith('*.')) {
    return isDnsName(value.slice(2)) ? null : 'must be "*." followed by a host name'
  }
  if (value === '*') return 'must name a host; leave "host" out to match any host'
  const bare = value.startsWith('[') && value.endsWith(']') ? value.slice(1, -1) : value
  if (isIPv6(bare) || (bare === value && isIPv4(value))) return null
  return isDnsName(value) ? null : 'must be a host name, an IP address or "*.suffix" (no port, no scheme)'
}

function hostSuffixProblem(value: string): string | null {
  if (!value.startsWith('.')) return 'must start with "." (".ws.example.com")'
  return isDnsName(value.slice(1)) ? null : 'must be "." followed by a host name'
}

function urlProblem(value: string): string | null {
  let url: URL
  try {
    url = new URL(value)
  } catch {
    return 'must be an http(s) URL'
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return 'must use http: or https:'
  if (url.search !== '' || url.hash !== '') return 'must not have a query or fragment'
  return null
}

export interface ParsedTarget {
  /** Host name or IP address, without brackets. */
  readonly host: string
  readonly port: number
}

/** `"node1:32770"`, `"10.0.0.5:80"`, `"[::1]:8080"` split, or null when it is not host:port. */
export function parseTarget(target: string): ParsedTarget | null {
  let host: string
  let portText: string
  if (target.startsWith('[')) {
    const end = target.indexOf(']')
    if (end === -1 || target[end + 1] !== ':') return null
    host = target.slice(1, end)
    portText = target.slice(end + 2)
    if (!isIPv6(host)) return null
  } else {
    const colon = target.lastIndexOf(':')
    if (colon === -1) return null
    host = target.slice(0, colon)
    portText = target.slice(colon + 1)
    if (host.includes(':')) return null
    if (!isIPv4(host) && !isDnsName(host)) return null
  }
  if (!/^\d{1,5}$/.test(portText)) return null
  const port = Number(portText)
  if (port < 1 || port > 65535) return null
  return { host, port }
}

function targetProblem(value: string, allowMetadataTargets: boolean): string | null {
  const bracketed = value.startsWith('[')
  const colon = bracketed ? value.indexOf(']:') + 1 : value.lastIndexOf(':')
  const host = bracketed ? value.slice(1, Math.max(colon - 1, 1)) : value.slice(0, Math.max(colon, 0))
  if (!allowMetadataTargets && host !== '' && isForbiddenTarget(host)) {
    return 'must not be a link-local or cloud metadata address (set admin.allowMetadataTargets to allow it)'
  }
  if (parseTarget(value)) {
    return !bracketed && !isIPv4(host) && parseIPv4Loose(host.toLowerCase()) !== null
      ? 'must spell an IPv4 address as four decimal numbers ("10.0.0.5:80")'
      : null
  }
  if (colon <= 0) return 'must be "host:port"'
  if (!bracketed && host.includes(':')) return 'must put an IPv6 address in brackets ("[::1]:8080")'
  const portText = value.slice(colon + 1)
  if (!/^\d{1,5}$/.test(portText) || Number(portText) < 1 || Number(portText) > 65535) {
    return 'must end in a port from 1 to 65535'
  }
  return 'must be "host:port" with a valid host name or IP address'
}

/** A DNS host name (RFC 1123 labels; "_" allowed, as Docker service names use it). */
function isDnsName(value: string): boolean {
  if (value.length === 0 || value.length > 253) return false
  return value.split('.').every((label) => /^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$/.test(label))
}

// ---------------------------------------------------------------------------------------------
// Link-local and cloud metadata addresses. A route to 169.254.169.254 hands the cloud
// instance's credentials to anyone who can reach the gateway (the Capital One 2019 SSRF).
// Resolvers accept many spellings of one IPv4 address (inet_aton: "2852039166",
// "0xa9fea9fe", "0251.0376.0251.0376", "169.254.43518"), so addresses are compared as numbers.

const FORBIDDEN_NAMES = new Set(['metadata.google.internal', 'metadata.goog'])

/** True for a link-local or cloud metadata address, in any spelling, with or without brackets. */
export function isForbiddenTarget(host: string): boolean {
  let h = host.trim().toLowerCase()
  if (h.startsWith('[') && h.endsWith(']')) h = h.slice(1, -1)
  const zone = h.indexOf('%')
  if (zone !== -1 && h.includes(':')) h = h.slice(0, zone)
  if (h.endsWith('.')) h = h.slice(0, -1)
  if (FORBIDDEN_NAMES.has(h)) return true
  const v4 = parseIPv4Loose(h)
  if (v4 !== null) return isForbiddenIPv4(v4)
  if (!isIPv6(h)) return false
  const words = ipv6Words(h)
  // fe80::/10, link-local
  if ((words[0] & 0xffc0) === 0xfe80) return true
  // fd00:ec2::254, the AWS metadata service over IPv6
  if (words.join(':') === [0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254].join(':')) return true
  // An IPv4 address carried in IPv6: mapped (::ffff:0:0/96), compatible (::/96, deprecated)
  // and NAT64 (64:ff9b::/96) all reach the IPv4 host.
  const head = words.slice(0, 5)
  const v4In6 = head.every((w) => w === 0) && (words[5] === 0xffff || words[5] === 0)
  const nat64 = words[0] === 0x64 && words[1] === 0xff9b && words.slice(2, 6).every((w) => w === 0)
  if (v4In6 || nat64) return isForbiddenIPv4(((words[6] << 16) | words[7]) >>> 0)
  return false
}

function isForbiddenIPv4(address: number): boolean {
  return (address >>> 16) === 0xa9fe || // 169.254.0.0/16
    address === 0x646464c8 // 100.100.100.200, Alibaba Cloud metadata
}

/** An IPv4 address as inet_aton(3) and the WHATWG URL parser read it, or null. */
function parseIPv4Loose(host: string): number | null {
  const parts = host.split('.')
  if (parts.length > 4) return null
  const numbers: number[] = []
  for (const part of parts) {
    let n: number
    if (/^0x[0-9a-f]*$/.test(part)) n = part.length === 2 ? 0 : parseInt(part.slice(2), 16)
    else if (/^0[0-7]*$/.test(part)) n = parseInt(part, 8)
    else if (/^[1-9][0-9]*$/.test(part)) n = Number(part)
    else return null
    numbers.push(n)
  }
  const last = numbers.pop() as number
  if (numbers.some((n) => n > 255)) return null
  if (last >= 2 ** (8 * (4 - numbers.length))) return null
  let address = 0
  numbers.forEach((n, i) => { address += n * 2 ** (8 * (3 - i)) })
  return address + last
}

/** The two 16-bit words of a valid IPv4 address. */
function ipv4Words(address: string): number[] {
  const [a, b, c, d] = address.split('.').map(Number)
  return [(a << 8) | b, (c << 8) | d]
}

/** The eight 16-bit words of a valid IPv6 address (one with a dotted IPv4 tail included). */
function ipv6Words(address: string): number[] {
  const toWords = (part: string): number[] => {
    if (part === '') return []
    return part.split(':').flatMap((group) => {
      if (!group.includes('.')) return [parseInt(group, 16)]
      const [a, b, c, d] = group.split('.').map(Number)
      return [(a << 8) | b, (c << 8) | d]
    })
  }
  const gap = address.indexOf('::')
  if (gap === -1) return toWords(address)
  const head = toWords(address.slice(0, gap))
  const tail = toWords(address.slice(gap + 2))
  return [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail]
}

// ---------------------------------------------------------------------------------------------
// Messages

function report(ctx: Context, path: string, message: string): void {
  ctx.issues.push({ path, message })
}

/** The bad value as the user wrote it: JSON, shortened. */
export function show(value: unknown): string {
  if (value === undefined) return 'nothing'
  let text: string
  try {
    text = JSON.stringify(value)
  } catch {
    // Nested deeper than JSON.stringify's stack (a state file or a value built in code can be;
    // parse-json.ts bounds what files and admin bodies hold): the problem must still be told.
    text = Array.isArray(value) ? '[...]' : '{...}'
  }
  return text.length > 60 ? `${text.slice(0, 57)}...` : text
}

/** `a.b`, `a[0]`, `a["odd key"]`: the JSON path notation every config issue uses. */
export function joinPath(base: string, key: string): string {
  if (/^[A-Za-z_$][A-Za-z0-9_$-]*$/.test(key)) return base === '' ? key : `${base}.${key}`
  return `${base}[${JSON.stringify(key)}]`
}

function closest(key: string, candidates: readonly string[]): string | null {
  let best: string | null = null
  let bestDistance = 3
  for (const candidate of candidates) {
    const d = editDistance(key.toLowerCase(), candidate.toLowerCase())
    if (d < bestDistance) { best = candidate; bestDistance = d }
  }
  return best
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    const current = [i]
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1))
    }
    previous = current
  }
  return previous[b.length]
}
