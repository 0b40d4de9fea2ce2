import type http from 'node:http'
import { afterEach, describe, expect, it } from 'vitest'
import { startGateway, type TestGateway } from '../helpers/gateway.js'
import { httpUpstream, type TestServer } from '../helpers/upstream.js'
import { admin } from '../admin/admin-client.js'

let gw: TestGateway | null = null
let up: TestServer<http.Server> | null = null
afterEach(async () => {
  await gw?.close()
  await up?.close()
  gw = null
  up = null
})

async function start(): Promise<TestGateway> {
  up = await httpUpstream((req, res) => {
    res.statusCode = req.url === '/missing' ? 404 : 200
    res.end('ok')
  })
  gw = await startGateway({ upstreams: { master: { targets: [up.target] } }, routes: [{ id: 'master', pathPrefix: '/', upstream: 'master' }] })
  return gw
}

/** The value of one sample line (`name{labels} value`), or null. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | null {
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`)
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue
    const [series, value] = [line.slice(0, line.lastIndexOf(' ')), line.slice(line.lastIndexOf(' ') + 1)]
    const bare = series.includes('{') ? series.slice(0, series.indexOf('{')) : series
    if (bare !== name) continue
    if (want.every((w) => series.includes(w))) return Number(value)
  }
  return null
}

describe('GET /metrics', () => {
  it('uses the contract names and counts a request', async () => {
    const g = await start()
    const before = (await admin(g, 'GET', '/metrics')).text
    for (const name of ['gateway_requests_total', 'gateway_request_duration_seconds', 'gateway_websocket_tunnels', 'gateway_route_cache_hits_total', 'gateway_route_cache_misses_total', 'gateway_upstream_errors_total']) {
      expect(before).toContain(`# TYPE ${name} `)
    }
    expect(sample(before, 'gateway_requests_total', { route: 'master', status_class: '2xx' })).toBeNull()
    expect((await fetch(`http://127.0.0.1:${g.port()}/a`)).status).toBe(200)
    expect((await fetch(`http://127.0.0.1:${g.port()}/missing`)).status).toBe(404)
    const res = await admin(g, 'GET', '/metrics')
    expect(res.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/)
    const text = res.text
    expect(sample(text, 'gateway_requests_total', { listener: 'http', route: 'master', status_class: '2xx' })).toBe(1)
    expect(sample(text, 'gateway_requests_total', { listener: 'http', route: 'master', status_class: '4xx' })).toBe(1)
    expect(sample(text, 'gateway_request_duration_seconds_count', { route: 'master' })).toBe(2)
    expect(sample(text, 'gateway_request_duration_seconds_bucket', { route: 'master', le: '+Inf' })).toBe(2)
    expect(sample(text, 'gateway_open_connections', { listener: 'http' })).not.toBeNull()
    expect(sample(text, 'gateway_upstream_connections', { target: up!.target, state: 'idle' })).toBeGreaterThanOrEqual(0)
    expect(sample(text, 'process_resident_memory_bytes')).toBeGreaterThan(0)
    expect(sample(text, 'process_open_fds')).toBeGreaterThan(0)
    expect(sample(text, 'gateway_registry_connected')).toBe(1)
  })

  it('counts upstream errors by target and code, and the gateway\'s own answers by code', async () => {
    gw = await startGateway({ upstreams: { dead: { targets: ['127.0.0.1:1'] } }, routes: [{ id: 'dead', pathPrefix: '/', upstream: 'dead' }] })
    expect((await fetch(`http://127.0.0.1:${gw.port()}/`)).status).toBe(502)
    const text = (await admin(gw, 'GET', '/metrics')).text
    expect(sample(text, 'gateway_upstream_errors_total', { target: '127.0.0.1:1', code: 'upstream_unreachable' })).toBeGreaterThanOrEqual(1)
    expect(sample(text, 'gateway_errors_total', { code: 'upstream_unreachable' })).toBe(1)
    expect(sample(text, 'gateway_requests_total', { route: 'dead', status_class: '5xx' })).toBe(1)
  })
})

describe('GET /stats', () => {
  it('reports per-route and per-upstream counts, latency percentiles, tunnels and the cache hit ratio', async () => {
    const g = await start()
    for (let i = 0; i < 5; i++) await (await fetch(`http://127.0.0.1:${g.port()}/s/${i}`)).text()
    const stats = (await admin(g, 'GET', '/stats')).json
    expect(stats.requests.total).toBe(5)
    expect(stats.requests.byStatusClass['2xx']).toBe(5)
    expect(stats.routes.master.requests).toBe(5)
    expect(stats.routes.master.latencyMs.p50).toBeGreaterThan(0)
    expect(stats.routes.master.latencyMs.p99).toBeGreaterThanOrEqual(stats.routes.master.latencyMs.p50)
    expect(stats.upstreams[up!.target].requests).toBe(5)
    expect(stats.tunnels).toEqual({ open: 0, opened: 0, closed: 0 })
    expect(stats.cache).toHaveProperty('hitRatio')
    expect(stats.registry.kind).toBe('embedded')
  })
})

describe('event-loop delay', () => {
  it('summarises windows of time, so that reading /metrics resets nothing', async () => {
    const { Metrics } = await import('../../src/observability/metrics.js')
    const { waitFor } = await import('../helpers/fake-registry.js')
    const metrics = new Metrics(400) // a window outlasts the polling below by far
    metrics.start()
    try {
      await waitFor(() => metrics.loopDelaySamples() > 2, 5000, 'the monitor sampling')
      const until = Date.now() + 150
      while (Date.now() < until) { /* a 150 ms stall of the event loop */ }
      await waitFor(() => metrics.loopDelayP99Seconds() >= 0.1, 5000, 'a window with the stall in it')
      const first = metrics.loopDelayP99Seconds()
      expect(metrics.loopDelayP99Seconds()).toBe(first) // reading again changes nothing
      // windows after it without a stall bring it back down
      await waitFor(() => metrics.loopDelayP99Seconds() < 0.1, 5000, 'a quiet window')
    } finally {
      metrics.stop()
    }
  })
})
