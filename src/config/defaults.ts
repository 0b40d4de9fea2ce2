// Every default the gateway runs with, in one place. `gateway.config.json` at the repository
// root is this object written out; test/config/load.test.ts keeps the two equal.
//
// Merge rules (applyDefaults): objects merge key by key with these defaults; the arrays and
// maps an operator lists in full (`listeners`, `routes`, `upstreams`, `stripCookies`,
// `tls.sni`) replace the default wholesale, because merging them element by element would
// silently keep a default listener on port 80 next to the operator's own.

import type { GatewayConfig, HttpsRedirectConfig, ListenerConfig, RouteConfig, UpstreamConfig } from './types.js'

const CERT = 'certs/gateway.crt'
const KEY = 'certs/gateway.key'

export const DEFAULTS: GatewayConfig = deepFreeze({
  /** Front sockets. Port 0 binds an ephemeral port (tests). */
  listeners: [
    { name: 'http', port: 80, host: '0.0.0.0', workspacesOnly: false },
    // The old nginx agent proxy ports: workspace requests only.
    { name: 'agents', port: 81, host: '0.0.0.0', workspacesOnly: true },
    { name: 'https', port: 443, host: '0.0.0.0', workspacesOnly: false, tls: { cert: CERT, key: KEY } },
    { name: 'agents-tls', port: 444, host: '0.0.0.0', workspacesOnly: true, tls: { cert: CERT, key: KEY } },
  ],
  /** Named target groups routes point at. */
  upstreams: {
    master: { targets: ['127.0.0.1:8080'], balance: 'round-robin', maxFails: 3, cooldownMs: 10_000 },
    agents: { targets: ['127.0.0.1:9000'], balance: 'round-robin', maxFails: 3, cooldownMs: 10_000 },
  },
  /** Static routes; requests matching none of these or a workspace shape get `no_route`. */
  routes: [
    { id: 'agent-binaries', pathPrefix: '/agent-binaries', upstream: 'agents', allowHttp: true },
    { id: 'master', pathPrefix: '/', upstream: 'master' },
  ],
  workspaces: {
    /** Host-name suffix of workspace host routes (".ws.example.com"); null: host routes off. */
    hostSuffix: null,
    /** Master session cookies never forwarded to workspace servers. */
    stripCookies: ['session-access-key', 'logged_in', 'token-access-key', 'IDESESSIONID', 'X-CSRF-Token'],
    registry: {
      /** Master's registry base URL; null: the embedded registry (admin API + stateFile). */
      url: null,
      /** Bearer token sent to the registry; null: none. */
      token: null,
      /** Entries held by the route cache (LRU); at most 10 000 000 (about 350 bytes each when full). */
      cacheSize: 100_000,
      /** ms a found entry is served from cache before it is asked for again. */
      cacheTtlMs: 30_000,
      /** ms a registry 404 is remembered. */
      negativeTtlMs: 2_000,
      /** ms an expired entry may still be served while the registry is unreachable. */
      staleIfErrorMs: 600_000,
    },
  },
  admin: {
    /** Admin listener address; keep it on loopback or a private network. */
    host: '127.0.0.1',
    /** Admin listener port. */
    port: 9090,
    /** Bearer token; null: GATEWAY_ADMIN_TOKEN, then tokenFile, then a generated one. */
    token: null,
    /** File holding the token (first line); null: none. */
    tokenFile: null,
    /** Permit link-local / cloud metadata targets (169.254.169.254 and friends). */
    allowMetadataTargets: false,
  },
  timeouts: {
    /** ms to open a TCP connection to an upstream target. */
    connectMs: 10_000,
    /** ms for a client to send the complete request head. */
    headersMs: 10_000,
    /**
     * ms for an upstream to start its response, from the end of the request body; also how
     * long a request body or a response body may stall.
     */
    responseMs: 60_000,
    /** ms a websocket tunnel may sit idle (agents send no pings; the old proxies used 1 h). */
    tunnelIdleMs: 3_600_000,
    /** ms in-flight requests get to finish on SIGTERM before sockets are destroyed. */
    shutdownGraceMs: 10_000,
    /** ms an idle client keep-alive connection is kept open. */
    keepAliveMs: 60_000,
    /**
     * ms an idle pooled upstream connection is kept. Below the shortest common server
     * keep-alive (Node's 5 s; Tomcat's 20 s) so the gateway closes an idle connection before
     * the server does, instead of racing the server's FIN with a new request.
     */
    upstreamIdleMs: 4_000,
    /**
     * ms a client may go without taking any of a response it is sent before it is cut off.
     * Long, because kernel socket buffers (megabytes on loopback) hide a slow reader's progress
     * from the gateway for seconds at a time.
     */
    clientReadMs: 60_000,
  },
  limits: {
    /** Bytes of request head (request line + headers). */
    maxHeaderBytes: 16_384,
    /** Header fields per request. */
    maxHeaderCount: 100,
    /** Bytes of request body (uploads to agents reach tens of MB). */
    maxBodyBytes: 33_554_432,
    /** Open client connections per process; beyond it: `over_capacity`. */
    maxConnections: 20_000,
    /** Open client connections per client address; 0: no per-client limit. */
    maxConnectionsPerClient: 0,
  },
  /** Embedded registry and admin routes, persisted (JSON). */
  stateFile: 'data/registry.json',
  /** Worker processes; "auto": one per CPU core. */
  workers: 1,
  accessLog: {
    /** Write one line per request. */
    enabled: false,
    /** File to append to; null: stdout. */
    path: null,
  },
})

/**
 * Defaults of keys inside array and map entries, which have no place in DEFAULTS because the
 * entries themselves are the operator's.
 */
export const ENTRY_DEFAULTS = deepFreeze({
  listener: { host: '0.0.0.0', workspacesOnly: false },
  upstream: { balance: 'round-robin', maxFails: 3, cooldownMs: 10_000 },
  route: { pathPrefix: '/' },
  redirectToHttps: { port: 443, permanent: false },
} satisfies {
  listener: Pick<ListenerConfig, 'host' | 'workspacesOnly'>
  upstream: Pick<UpstreamConfig, 'balance' | 'maxFails' | 'cooldownMs'>
  route: Pick<RouteConfig, 'pathPrefix'>
  redirectToHttps: HttpsRedirectConfig
})

/**
 * The user's raw config with defaults filled in. Tolerant of any input: a value of the wrong
 * type is kept as it is so that validation reports it at the user's own path.
 */
export function applyDefaults(raw: unknown): unknown {
  if (!isPlainObject(raw)) return raw
  const merged = mergeObject(DEFAULTS, raw)
  if (Array.isArray(merged.listeners)) merged.listeners = merged.listeners.map(withListenerDefaults)
  if (isPlainObject(merged.upstreams)) {
    const upstreams: Record<string, unknown> = {}
    for (const [name, upstream] of Object.entries(merged.upstreams)) setOwn(upstreams, name, withUpstreamDefaults(upstream))
    merged.upstreams = upstreams
  }
  if (Array.isArray(merged.routes)) merged.routes = merged.routes.map(withRouteDefaults)
  return merged
}

export function withListenerDefaults(listener: unknown): unknown {
  if (!isPlainObject(listener)) return listener
  const out: Record<string, unknown> = { ...ENTRY_DEFAULTS.listener, ...listener }
  if (isPlainObject(out.redirectToHttps)) out.redirectToHttps = { ...ENTRY_DEFAULTS.redirectToHttps, ...out.redirectToHttps }
  return out
}

export function withUpstreamDefaults(upstream: unknown): unknown {
  return isPlainObject(upstream) ? { ...ENTRY_DEFAULTS.upstream, ...upstream } : upstream
}

/** A route (config or admin API) with `pathPrefix` defaulted. */
export function withRouteDefaults(route: unknown): unknown {
  return isPlainObject(route) ? { ...ENTRY_DEFAULTS.route, ...route } : route
}

// Replaced wholesale, never merged (see the merge rules at the top).
const REPLACED = new Set(['listeners', 'upstreams', 'routes'])

function mergeObject(defaults: object, user: Record<string, unknown>, depth = 0): Record<string, unknown> {
  const out: Record<string, unknown> = { ...defaults }
  for (const [key, value] of Object.entries(user)) {
    const base = Object.hasOwn(defaults, key) ? (defaults as Record<string, unknown>)[key] : undefined
    const replaced = depth === 0 && REPLACED.has(key)
    setOwn(out, key, !replaced && isPlainObject(base) && isPlainObject(value) ? mergeObject(base, value, depth + 1) : value)
  }
  return out
}

// A JSON key "__proto__" must stay a plain (and then rejected) key, never a prototype.
function setOwn(target: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true })
}

export function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

export function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value)
    for (const key of Object.keys(value)) deepFreeze((value as Record<string, unknown>)[key])
  }
  return value
}
