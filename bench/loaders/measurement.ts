// What every loader returns: one headline figure with its unit, latency, and failures.

import type { LatencyRecorder } from './latency-recorder.js'

export interface Measurement {
  /** "req/s", "msg/s", "handshakes/s", "B/tunnel". */
  readonly unit: string
  readonly value: number
  /** False for costs (memory per tunnel), where smaller wins. */
  readonly higherIsBetter: boolean
  readonly p50Ms: number | null
  readonly p99Ms: number | null
  /** Connection errors, resets, timeouts. */
  readonly errors: number
  /** Responses outside 2xx (HTTP loads only). */
  readonly non2xx: number
  /** Completed operations (requests, round trips, handshakes, tunnels). */
  readonly total: number
  readonly seconds: number
  /** Which loader measured it. */
  readonly loader: string
  readonly extra?: Readonly<Record<string, number | string>>
}

/** One HTTP load: what wrk, autocannon and the socket loop all know how to send. */
export interface HttpLoad {
  readonly url: string
  readonly method: 'GET' | 'POST'
  readonly body?: Buffer
  /** Extra request headers (e.g. Host for host routes). */
  readonly headers?: Readonly<Record<string, string>>
  readonly connections: number
  readonly seconds: number
  /** `Connection: close` on every request: a new connection (and, for HTTPS, handshake) each. */
  readonly newConnectionPerRequest: boolean
}

export interface HttpLoader {
  readonly name: string
  run(load: HttpLoad): Promise<Measurement>
}

/** The measurement of a node-driven loop: one latency sample per completed operation. */
export function fromLatencies(unit: string, loader: string, latency: LatencyRecorder, seconds: number, errors: number, non2xx = 0): Measurement {
  return {
    unit,
    value: latency.size / seconds,
    higherIsBetter: true,
    p50Ms: latency.percentile(50),
    p99Ms: latency.percentile(99),
    errors,
    non2xx,
    total: latency.size,
    seconds,
    loader,
  }
}
