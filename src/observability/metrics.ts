// Counters fed by the hot path's diagnostics channels (observability/channels.ts), and the
// two read-outs built from them plus the gateway's own live state: Prometheus text
// (`GET /metrics`) and JSON figures (`GET /stats`).
//
// Subscriber cost per request: two Map lookups, a bucket scan and a few additions; nothing is
// allocated once a (listener, route) pair has been seen. Label sets are bounded: route ids are
// the configured and admin routes plus "workspace" (never a workspace key), upstream targets
// (which come and go with workspaces) are capped and the rest counted under "other".
//
// The channels are process-wide: two gateways in one process (tests) see each other's
// requests. One gateway per process is how it runs.

import { readdir } from 'node:fs/promises'
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks'
import type { Gateway } from '../gateway.js'
import { gatewayEvent, requestDone, tunnelClosed, tunnelOpened, upstreamFailed, type RequestDoneMessage, type TunnelMessage, type UpstreamErrorMessage } from './channels.js'
import { Histogram } from './histogram.js'

/** Event-loop delay is summarised over windows of this length (reading /metrics resets nothing). */
const LOOP_WINDOW_MS = 60_000

/** Distinct (listener, route) series kept; later ones count under route "other". */
const MAX_ROUTE_SERIES = 2000
/** Distinct upstream targets with their own error series; later ones count under "other". */
const MAX_ERROR_TARGETS = 200
/** Targets listed one by one in pool gauges and /stats; the rest are summed as "other". */
const TOP_TARGETS = 20
const STATUS_CLASSES = ['none', '1xx', '2xx', '3xx', '4xx', '5xx'] as const

class RouteSeries {
  /** Responses by status class (index: status / 100; 0: no status, the client left first). */
  readonly byClass = new Float64Array(6)
  readonly duration = new Histogram()
  bytesIn = 0
  bytesOut = 0
  constructor(readonly listener: string, readonly route: string) {}
}

interface Counter { n: number }

export interface AccessLogFigures {
  readonly lines: number
  readonly dropped: number
  readonly writeErrors: number
  readonly reopens: number
}

export class Metrics {
  private readonly series = new Map<string, Map<string, RouteSeries>>()
  private seriesCount = 0
  /** Answers the gateway made itself, by `x-gateway-error` code. */
  private readonly gatewayErrors = new Map<string, Counter>()
  private readonly upstreamErrors = new Map<string, Map<string, Counter>>()
  private readonly tunnelsOpened = new Map<string, Counter>()
  private tunnelsClosed = 0
  private tunnelBytesUp = 0
  private tunnelBytesDown = 0
  private readonly events = new Map<string, Counter>()
  private readonly limitHits = new Map<string, Counter>()
  private reloadsOk = 0
  private reloadsFailed = 0
  private readonly loopDelay: IntervalHistogram
  /** p99 event-loop delay of the last complete window, ns; null before the first one ends. */
  private lastWindowP99: number | null = null
  private windowTimer: NodeJS.Timeout | null = null
  private subscribed = false

  /** `loopWindowMs`: the event-loop delay p99 covers windows of this length, not scrapes. */
  constructor(private readonly loopWindowMs = LOOP_WINDOW_MS) {
    this.loopDelay = monitorEventLoopDelay({ resolution: 20 })
  }

  start(): void {
    if (this.subscribed) return
    this.subscribed = true
    requestDone.subscribe(this.onRequest)
    tunnelOpened.subscribe(this.onTunnelOpened)
    tunnelClosed.subscribe(this.onTunnelClosed)
    upstreamFailed.subscribe(this.onUpstreamError)
    gatewayEvent.subscribe(this.onEvent)
    this.loopDelay.enable()
    this.windowTimer = setInterval(() => {
      this.lastWindowP99 = this.loopDelay.count > 0 ? this.loopDelay.percentile(99) : 0
      this.loopDelay.reset()
    }, this.loopWindowMs)
    this.windowTimer.unref()
  }

  /** Event-loop delay samples in the current window. */
  loopDelaySamples(): number {
    return this.loopDelay.count
  }

  /** p99 event-loop delay in seconds: the last complete window, or the current one before that. */
  loopDelayP99Seconds(): number {
    if (this.lastWindowP99 !== null) return this.lastWindowP99 / 1e9
    return this.loopDelay.count > 0 ? this.loopDelay.percentile(99) / 1e9 : 0
  }

  stop(): void {
    if (!this.subscribed) return
    this.subscribed = false
    requestDone.unsubscribe(this.onRequest)
    tunnelOpened.unsubscribe(this.onTunnelOpened)
    tunnelClosed.unsubscribe(this.onTunnelClosed)
    upstreamFailed.unsubscribe(this.onUpstreamError)
    gatewayEvent.unsubscribe(this.onEvent)
    this.loopDelay.disable()
    if (this.windowTimer !== null) clearInterval(this.windowTimer)
    this.windowTimer = null
  }

  // ---- subscribers (hot path) ----------------------------------------------------------

  private readonly onRequest = (message: unknown): void => {
    const m = message as RequestDoneMessage
    const s = this.seriesFor(m.listener, m.routeId ?? '-')
    const c = (m.status / 100) | 0
    s.byClass[c >= 1 && c <= 5 ? c : 0]++
    s.duration.observe(m.durationMs / 1000)
    s.bytesIn += m.bytesIn
    s.bytesOut += m.bytesOut
    if (m.error !== null) count(this.gatewayErrors, m.error)
  }

  private readonly onTunnelOpened = (message: unknown): void => {
    count(this.tunnelsOpened, (message as TunnelMessage).listener)
  }

  private readonly onTunnelClosed = (message: unknown): void => {
    const m = message as TunnelMessage
    this.tunnelsClosed++
    this.tunnelBytesUp += m.bytesUp ?? 0
    this.tunnelBytesDown += m.bytesDown ?? 0
  }

  private readonly onUpstreamError = (message: unknown): void => {
    const m = message as UpstreamErrorMessage
    let byCode = this.upstreamErrors.get(m.target)
    if (byCode === undefined) {
      const key = this.upstreamErrors.size < MAX_ERROR_TARGETS ? m.target : 'other'
      byCode = this.upstreamErrors.get(key)
      if (byCode === undefined) this.upstreamErrors.set(key, byCode = new Map())
    }
    count(byCode, m.code)
  }

  private readonly onEvent = (message: unknown): void => {
    const m = message as { event?: unknown; limit?: unknown; ok?: unknown }
    if (typeof m.event !== 'string') return
    count(this.events, m.event)
    if (m.event === 'limit_hit' && typeof m.limit === 'string') count(this.limitHits, m.limit)
    else if (m.event === 'reload') {
      if (m.ok === true) this.reloadsOk++
      else this.reloadsFailed++
    }
  }

  private seriesFor(listener: string, route: string): RouteSeries {
    let byRoute = this.series.get(listener)
    if (byRoute === undefined) this.series.set(listener, byRoute = new Map())
    let s = byRoute.get(route)
    if (s === undefined) {
      if (this.seriesCount >= MAX_ROUTE_SERIES) route = 'other'
      s = byRoute.get(route)
      if (s === undefined) {
        byRoute.set(route, s = new RouteSeries(listener, route))
        this.seriesCount++
      }
    }
    return s
  }

  // ---- read-outs ----------------------------------------------------------------------

  /** Prometheus text exposition format 0.0.4. */
  async prometheus(gw: Gateway, accessLog: AccessLogFigures | null): Promise<string> {
    const out = new PromText()

    out.family('gateway_requests_total', 'counter', 'HTTP exchanges finished (websocket handshakes count with status class 1xx)')
    for (const s of this.allSeries()) {
      for (let c = 0; c < 6; c++) {
        if (s.byClass[c] > 0) out.sample('gateway_requests_total', { listener: s.listener, route: s.route, status_class: STATUS_CLASSES[c] }, s.byClass[c])
      }
    }
    out.family('gateway_request_duration_seconds', 'histogram', 'From the complete request head to the end of the response')
    for (const s of this.allSeries()) {
      const labels = { listener: s.listener, route: s.route }
      let cumulative = 0
      for (let i = 0; i < s.duration.bounds.length; i++) {
        cumulative += s.duration.counts[i]
        out.sample('gateway_request_duration_seconds_bucket', { ...labels, le: String(s.duration.bounds[i]) }, cumulative)
      }
      out.sample('gateway_request_duration_seconds_bucket', { ...labels, le: '+Inf' }, s.duration.count)
      out.sample('gateway_request_duration_seconds_sum', labels, s.duration.sum)
      out.sample('gateway_request_duration_seconds_count', labels, s.duration.count)
    }
    out.family('gateway_request_bytes_total', 'counter', 'Bytes received from clients, heads included')
    for (const s of this.allSeries()) out.sample('gateway_request_bytes_total', { listener: s.listener, route: s.route }, s.bytesIn)
    out.family('gateway_response_bytes_total', 'counter', 'Bytes sent to clients, heads included')
    for (const s of this.allSeries()) out.sample('gateway_response_bytes_total', { listener: s.listener, route: s.route }, s.bytesOut)
    out.family('gateway_errors_total', 'counter', 'Answers the gateway made itself, by x-gateway-error code')
    for (const [code, c] of this.gatewayErrors) out.sample('gateway_errors_total', { code }, c.n)

    out.family('gateway_open_connections', 'gauge', 'Open client connections per listener')
    for (const [name, l] of gw.listeners) out.sample('gateway_open_connections', { listener: name }, l.ctx.open)
    out.family('gateway_connections_refused_total', 'counter', 'Connections refused over a limit or while shutting down')
    out.sample('gateway_connections_refused_total', {}, gw.engine.refused)
    out.family('gateway_limit_hits_total', 'counter', 'Limits hit, by limit')
    for (const [limit, c] of this.limitHits) out.sample('gateway_limit_hits_total', { limit }, c.n)

    out.family('gateway_websocket_tunnels', 'gauge', 'Open websocket tunnels')
    out.sample('gateway_websocket_tunnels', {}, gw.engine.tunnels.size)
    out.family('gateway_websocket_tunnels_opened_total', 'counter', 'Websocket tunnels opened, per listener')
    for (const [listener, c] of this.tunnelsOpened) out.sample('gateway_websocket_tunnels_opened_total', { listener }, c.n)
    out.family('gateway_websocket_tunnels_closed_total', 'counter', 'Websocket tunnels closed')
    out.sample('gateway_websocket_tunnels_closed_total', {}, this.tunnelsClosed)
    out.family('gateway_websocket_tunnel_bytes_total', 'counter', 'Bytes carried by closed tunnels')
    out.sample('gateway_websocket_tunnel_bytes_total', { direction: 'up' }, this.tunnelBytesUp)
    out.sample('gateway_websocket_tunnel_bytes_total', { direction: 'down' }, this.tunnelBytesDown)

    const cache = gw.cache.stats()
    out.family('gateway_route_cache_hits_total', 'counter', 'Workspace lookups answered from a fresh cache entry')
    out.sample('gateway_route_cache_hits_total', {}, cache.hits)
    out.family('gateway_route_cache_misses_total', 'counter', 'Workspace lookups that waited for the registry')
    out.sample('gateway_route_cache_misses_total', {}, cache.misses)
    out.family('gateway_route_cache_stale_total', 'counter', 'Workspace lookups answered from an expired entry')
    out.sample('gateway_route_cache_stale_total', {}, cache.staleServed)
    out.family('gateway_route_cache_entries', 'gauge', 'Keys in the route cache (embedded registry: its entries)')
    out.sample('gateway_route_cache_entries', {}, cache.size)

    const reg = gw.registrySource.state()
    out.family('gateway_registry_connected', 'gauge', '1 while the registry event feed is live')
    out.sample('gateway_registry_connected', {}, cache.connected ? 1 : 0)
    out.family('gateway_registry_errors_total', 'counter', 'Registry failures by kind')
    out.sample('gateway_registry_errors_total', { kind: 'lookup' }, reg.lookupErrors)
    out.sample('gateway_registry_errors_total', { kind: 'stream' }, reg.streamErrors)
    out.sample('gateway_registry_errors_total', { kind: 'event' }, reg.eventErrors)
    out.family('gateway_registry_events_total', 'counter', 'Registry events applied to the route cache')
    out.sample('gateway_registry_events_total', {}, cache.eventsApplied)
    out.family('gateway_registry_event_lag_seconds', 'gauge', 'Delay of the last registry event (receipt minus the registry\'s timestamp)')
    if (cache.lastEventLagMs !== null) out.sample('gateway_registry_event_lag_seconds', {}, cache.lastEventLagMs / 1000)
    out.family('gateway_registry_version', 'gauge', 'Version of the last registry change seen')
    out.sample('gateway_registry_version', {}, reg.lastVersion)

    out.family('gateway_upstream_errors_total', 'counter', 'Failed upstream attempts by target and code')
    for (const [target, byCode] of this.upstreamErrors) {
      for (const [code, c] of byCode) out.sample('gateway_upstream_errors_total', { target, code }, c.n)
    }
    const pools = topTargets(gw)
    out.family('gateway_upstream_targets', 'gauge', 'Upstream targets the gateway holds a pool for')
    out.sample('gateway_upstream_targets', {}, pools.total)
    out.family('gateway_upstream_connections', 'gauge', `Upstream connections by state (the ${TOP_TARGETS} busiest targets; the rest as target="other")`)
    for (const t of pools.rows) {
      out.sample('gateway_upstream_connections', { target: t.target, state: 'active' }, t.active)
      out.sample('gateway_upstream_connections', { target: t.target, state: 'idle' }, t.idle)
    }
    out.family('gateway_upstream_up', 'gauge', '1 when a target is in rotation (the busiest targets)')
    for (const t of pools.rows) if (t.target !== 'other') out.sample('gateway_upstream_up', { target: t.target }, t.healthy ? 1 : 0)

    out.family('gateway_routes_version', 'gauge', 'Version of the route set (bumped by every route change and reload)')
    out.sample('gateway_routes_version', {}, gw.version)
    out.family('gateway_reloads_total', 'counter', 'Config reloads by result')
    out.sample('gateway_reloads_total', { result: 'ok' }, this.reloadsOk)
    out.sample('gateway_reloads_total', { result: 'failed' }, this.reloadsFailed)
    out.family('gateway_events_total', 'counter', 'Operational events by name')
    for (const [event, c] of this.events) out.sample('gateway_events_total', { event }, c.n)

    if (accessLog !== null) {
      out.family('gateway_access_log_lines_total', 'counter', 'Access log lines written')
      out.sample('gateway_access_log_lines_total', {}, accessLog.lines)
      out.family('gateway_access_log_dropped_total', 'counter', 'Access log lines dropped because the output could not keep up or failed')
      out.sample('gateway_access_log_dropped_total', {}, accessLog.dropped)
    }

    const mem = process.memoryUsage()
    const uptime = process.uptime()
    out.family('process_resident_memory_bytes', 'gauge', 'Resident set size')
    out.sample('process_resident_memory_bytes', {}, mem.rss)
    out.family('nodejs_heap_used_bytes', 'gauge', 'V8 heap in use')
    out.sample('nodejs_heap_used_bytes', {}, mem.heapUsed)
    out.family('nodejs_heap_total_bytes', 'gauge', 'V8 heap reserved')
    out.sample('nodejs_heap_total_bytes', {}, mem.heapTotal)
    out.family('nodejs_external_memory_bytes', 'gauge', 'Memory of buffers and other objects outside the V8 heap')
    out.sample('nodejs_external_memory_bytes', {}, mem.external)
    const fds = await openFds()
    if (fds !== null) {
      out.family('process_open_fds', 'gauge', 'Open file descriptors')
      out.sample('process_open_fds', {}, fds)
    }
    out.family('process_uptime_seconds', 'gauge', 'Seconds since the process started')
    out.sample('process_uptime_seconds', {}, uptime)
    out.family('process_start_time_seconds', 'gauge', 'Start time of the process since the epoch')
    out.sample('process_start_time_seconds', {}, Math.round(Date.now() / 1000 - uptime))
    out.family('nodejs_eventloop_delay_p99_seconds', 'gauge', `99th percentile of event loop delay over the last ${this.loopWindowMs / 1000} s window`)
    out.sample('nodejs_eventloop_delay_p99_seconds', {}, this.loopDelayP99Seconds())
    return out.text()
  }

  /** The `GET /stats` document. */
  stats(gw: Gateway, accessLog: AccessLogFigures | null): Record<string, unknown> {
    const total = new Float64Array(6)
    const all = new Histogram()
    const routes = new Map<string, { requests: number; errors5xx: number; histogram: Histogram }>()
    for (const s of this.allSeries()) {
      let r = routes.get(s.route)
      if (r === undefined) routes.set(s.route, r = { requests: 0, errors5xx: 0, histogram: new Histogram() })
      for (let c = 0; c < 6; c++) {
        total[c] += s.byClass[c]
        r.requests += s.byClass[c]
      }
      r.errors5xx += s.byClass[5]
      merge(r.histogram, s.duration)
      merge(all, s.duration)
    }
    const cache = gw.cache.stats()
    const lookups = cache.hits + cache.misses + cache.staleServed
    const pools = topTargets(gw, 50)
    return {
      uptimeSeconds: Math.round(process.uptime()),
      routesVersion: gw.version,
      requests: {
        total: total.reduce((a, b) => a + b, 0),
        byStatusClass: Object.fromEntries(STATUS_CLASSES.map((name, i) => [name, total[i]])),
        latencyMs: latency(all),
      },
      routes: Object.fromEntries([...routes].map(([id, r]) => [id, { requests: r.requests, errors5xx: r.errors5xx, latencyMs: latency(r.histogram) }])),
      upstreams: Object.fromEntries(pools.rows.map((t) => [t.target, { requests: t.requests, errors: t.errors, active: t.active, idle: t.idle, healthy: t.healthy }])),
      upstreamTargets: pools.total,
      gatewayErrors: Object.fromEntries([...this.gatewayErrors].map(([code, c]) => [code, c.n])),
      tunnels: { open: gw.engine.tunnels.size, opened: [...this.tunnelsOpened.values()].reduce((a, c) => a + c.n, 0), closed: this.tunnelsClosed },
      connections: {
        open: gw.engine.connections.size,
        refused: gw.engine.refused,
        byListener: Object.fromEntries([...gw.listeners].map(([name, l]) => [name, l.ctx.open])),
      },
      cache: { ...cache, hitRatio: lookups === 0 ? null : round(cache.hits / lookups, 4) },
      registry: gw.registry !== null ? { kind: 'embedded', servers: gw.registry.size, ...gw.registrySource.state() } : { kind: 'remote', ...gw.registrySource.state() },
      ...(accessLog !== null ? { accessLog } : {}),
    }
  }

  private *allSeries(): IterableIterator<RouteSeries> {
    for (const byRoute of this.series.values()) yield* byRoute.values()
  }
}

function count(map: Map<string, Counter>, key: string): void {
  const c = map.get(key)
  if (c !== undefined) c.n++
  else map.set(key, { n: 1 })
}

function merge(into: Histogram, from: Histogram): void {
  for (let i = 0; i < from.counts.length; i++) into.counts[i] += from.counts[i]
  into.sum += from.sum
  into.count += from.count
}

function latency(h: Histogram): { p50: number | null; p99: number | null } {
  const p50 = h.quantile(0.5)
  const p99 = h.quantile(0.99)
  return { p50: p50 === null ? null : round(p50 * 1000, 3), p99: p99 === null ? null : round(p99 * 1000, 3) }
}

function round(n: number, digits: number): number {
  const f = 10 ** digits
  return Math.round(n * f) / f
}

interface TargetRow { target: string; active: number; idle: number; requests: number; errors: number; healthy: boolean }

/** The `limit` busiest targets (open connections, then requests); the rest summed as "other". */
function topTargets(gw: Gateway, limit = TOP_TARGETS): { rows: TargetRow[]; total: number } {
  const rows: TargetRow[] = []
  for (const t of gw.targets.all()) {
    rows.push({ target: t.key, active: t.active, idle: t.idleCount, requests: t.requests, errors: t.errors, healthy: t.healthy })
  }
  const total = rows.length
  if (rows.length <= limit) return { rows, total }
  rows.sort((a, b) => (b.active + b.idle) - (a.active + a.idle) || b.requests - a.requests)
  const other: TargetRow = { target: 'other', active: 0, idle: 0, requests: 0, errors: 0, healthy: true }
  for (const r of rows.slice(limit)) {
    other.active += r.active
    other.idle += r.idle
    other.requests += r.requests
    other.errors += r.errors
  }
  return { rows: [...rows.slice(0, limit), other], total }
}

async function openFds(): Promise<number | null> {
  try {
    // readdir holds one descriptor of its own while it reads
    return (await readdir('/proc/self/fd')).length - 1
  } catch {
    return null // not Linux
  }
}

/** Builds the exposition text: HELP and TYPE once per family, escaped label values. */
class PromText {
  private readonly lines: string[] = []

  family(name: string, type: 'counter' | 'gauge' | 'histogram', help: string): void {
    this.lines.push(`# HELP ${name} ${help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')}`, `# TYPE ${name} ${type}`)
  }

  sample(name: string, labels: Record<string, string>, value: number): void {
    const keys = Object.keys(labels)
    const text = keys.length === 0 ? '' : `{${keys.map((k) => `${k}="${escapeLabel(labels[k])}"`).join(',')}}`
    this.lines.push(`${name}${text} ${formatValue(value)}`)
  }

  text(): string {
    return `${this.lines.join('\n')}\n`
  }
}

function escapeLabel(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')
}

function formatValue(n: number): string {
  if (Number.isNaN(n)) return 'NaN'
  if (n === Infinity) return '+Inf'
  if (n === -Infinity) return '-Inf'
  return String(n)
}
