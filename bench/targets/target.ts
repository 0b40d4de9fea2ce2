// What a target is: something that accepts the scenarios' traffic and forwards it to the
// shared upstream or a scenario's own (or, for "direct", is that upstream). Each driver
// starts one from a spec.
import type { CertKind, CertSet } from '../certs.js'
import type { Upstream } from '../upstream/upstream.js'

export const TARGET_NAMES = ['direct', 'http-proxy', 'haproxy', 'gateway'] as const
export type TargetName = (typeof TARGET_NAMES)[number]

/** The routes a gateway is started with (the references always forward everything). */
export type RouteSet =
  /** One catch-all route to the upstream. */
  | 'catch-all'
  /** 10 host + path routes (`h{i}.bench.test`, `/p{i}`) and the catch-all. */
  | 'hosts-10'
  /** 100 000 of them and the catch-all. */
  | 'hosts-100k'

export interface TargetSpec {
  /** Certificate on the HTTPS port. */
  readonly cert: CertKind
  /** False: the scenario sends no TLS, so an instance with either certificate will do. */
  readonly usesTls: boolean
  readonly routes: RouteSet
  /** A new process for this scenario alone (memory figures want one without history). */
  readonly fresh: boolean
  /**
   * A scenario's own plain HTTP upstream (get-fast-upstream's nginx) instead of the shared
   * Node one; HTTPS and websocket loads are not sent to it. Default: env.upstream.httpPort.
   */
  readonly upstreamPort?: number
  /** http-proxy only; default 'keep-alive' (see http-proxy-server.ts). */
  readonly httpProxyAgent?: HttpProxyAgent
}

/**
 * How http-proxy reaches the upstream: 'keep-alive', the fair setup every scenario uses, or
 * 'default', the package as it comes (no agent: a new upstream connection per request).
 */
export type HttpProxyAgent = 'keep-alive' | 'default'

export const DEFAULT_SPEC: TargetSpec = { cert: 'ecdsa', usesTls: false, routes: 'catch-all', fresh: false }

export interface TargetEnv {
  /** Per-run temporary folder for configs and logs. */
  readonly workDir: string
  readonly certs: CertSet
  readonly upstream: Upstream
  /** `--workers`: gateway `workers` and HAProxy `nbthread`; null leaves the gateway default. */
  readonly workers: number | null
  /** Open file limit children are raised to. */
  readonly nofile: number
  /** HAProxy's maxconn: it refuses to start unless 2 x maxconn descriptors fit the limit. */
  readonly maxConnections: number
}

/** The plain HTTP port a proxy forwards to, and the one "direct" loads. */
export function upstreamPortOf(spec: TargetSpec, env: TargetEnv): number {
  return spec.upstreamPort ?? env.upstream.httpPort
}

export interface RunningTarget {
  readonly name: TargetName
  /** e.g. http://127.0.0.1:41000 (also the websocket base, with ws:). */
  readonly httpUrl: string
  readonly httpsUrl: string
  /** The proxying process, for memory figures; null when there is none (direct). */
  readonly pid: number | null
  /** Gateway only: the admin listener's base URL and token. */
  readonly admin?: { readonly url: string; readonly token: string }
  /** Gateway only: turns its access log on or off through a config reload (POST /reload). */
  setAccessLog?(on: boolean): Promise<void>
  /** Something the reader of the results should know about this instance. */
  readonly note?: string
  stop(): Promise<void>
}

export interface TargetDriver {
  readonly name: TargetName
  /** Null when it can run here, else why not ("haproxy not on PATH"). */
  unavailable(): string | null
  start(spec: TargetSpec, env: TargetEnv): Promise<RunningTarget>
}
