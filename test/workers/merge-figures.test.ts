import { describe, expect, it } from 'vitest'
import { mergePrometheus, mergeStats } from '../../src/workers/merge-figures.js'

describe('adding up worker figures', () => {
  it('adds counters, gauges and histogram buckets, and keeps per-process figures at their largest', () => {
    const a = '# TYPE gateway_requests_total counter\ngateway_requests_total{route="a"} 3\ngateway_request_duration_seconds_bucket{le="0.1"} 2\nprocess_uptime_seconds 10\n'
    const b = '# TYPE gateway_requests_total counter\ngateway_requests_total{route="a"} 4\ngateway_requests_total{route="b"} 1\ngateway_request_duration_seconds_bucket{le="0.1"} 5\nprocess_uptime_seconds 12\n'
    const merged = mergePrometheus([a, b])
    expect(merged).toContain('gateway_requests_total{route="a"} 7\n')
    expect(merged).toContain('gateway_requests_total{route="b"} 1\n')
    expect(merged).toContain('gateway_request_duration_seconds_bucket{le="0.1"} 7\n')
    expect(merged).toContain('process_uptime_seconds 12\n')
    expect(merged.match(/# TYPE gateway_requests_total counter/g)).toHaveLength(1)
  })

  it('adds stats counts and takes the largest latency and version', () => {
    const merged = mergeStats([
      { requests: { total: 3, latencyMs: { p50: 2, p99: 9 } }, routesVersion: 4 },
      { requests: { total: 5, latencyMs: { p50: 3, p99: 7 } }, routesVersion: 4 },
    ])
    expect(merged).toEqual({ requests: { total: 8, latencyMs: { p50: 3, p99: 9 } }, routesVersion: 4 })
  })
})
