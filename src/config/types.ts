// The configuration's shape, as the contract (shared/CONTRACT.md) names it. Every object the
// gateway runs on is the frozen result of `loadConfigFile` or `parseConfig` (config/load.ts):
// defaults applied (config/defaults.ts), validated, deep-frozen. Units are in the names.

export interface TlsConfig {
  /** PEM certificate chain file, relative to the config file's folder. */
  readonly cert: string
  /** PEM private key file, relative to the config file's folder. */
  readonly key: string
  /** Extra certificates picked by SNI server name (exact or `*.suffix`). */
  readonly sni?: readonly { readonly hosts: readonly string[]; readonly cert: string; readonly key: string }[]
}

export interface ListenerConfig {
  /** Unique name, used in logs, metrics and bind errors. */
  readonly name: string
  readonly port: number
  /** Bind address; default "0.0.0.0". */
  readonly host: string
  /** Serve workspace requests only (the old agent proxy ports 81/444). Default false. */
  readonly workspacesOnly: boolean
  /** Present: the listener is HTTPS. */
  readonly tls?: TlsConfig
  /** Present: plain-HTTP requests are redirected to HTTPS, but for routes with `allowHttp`. */
  readonly redirectToHttps?: HttpsRedirectConfig
  /** Present: every connection starts with a PROXY protocol header (v1 or v2) from one of these. */
  readonly proxyProtocol?: ProxyProtocolConfig
}

export interface ProxyProtocolConfig {
  /** IP addresses and CIDR ranges of the load balancers that may send the header. */
  readonly trustedProxies: readonly string[]
}

export interface HttpsRedirectConfig {
  /** The HTTPS port the Location names (443 is left out of it). Default 443. */
  readonly port: number
  /** 301 (308 for methods other than GET and HEAD) instead of 302 (307). Default false. */
  readonly permanent: boolean
}

export type BalanceStrategy = 'round-robin' | 'least-connections'

export interface UpstreamConfig {
  /** "host:port" targets. */
  readonly targets: readonly string[]
  /** How a request picks one of `targets`. Default "round-robin". */
  readonly balance: BalanceStrategy
  /** Consecutive connect failures that take a target out of rotation. Default 3. */
  readonly maxFails: number
  /** ms a failed target stays out before one trial request may bring it back. Default 10000. */
  readonly cooldownMs: number
  /** Active HTTP checks; absent: passive health only. */
  readonly healthCheck?: HealthCheckConfig
  /** HTML page served (503) to browsers when this upstream cannot answer; null: plain error. */
  readonly errorPage?: string | null
}

export interface HealthCheckConfig {
  /** Path requested with GET, e.g. "/api/healthz". */
  readonly path: string
  /** ms between checks of each target. Default 5000. */
  readonly intervalMs?: number
  /** ms a check may take. Default 2000. */
  readonly timeoutMs?: number
  /** The status a healthy target answers. Default 200. */
  readonly expectStatus?: number
}

export interface RouteConfig {
  readonly id: string
  /** Exact host ("ide.example.com") or wildcard ("*.example.com"); absent: any host. */
  readonly host?: string
  /** Matched on a segment boundary; default "/". */
  readonly pathPrefix: string
  /** Name of an entry of `upstreams`; exactly one of `upstream` and `targets`. */
  readonly upstream?: string
  readonly targets?: readonly string[]
  /** Served over plain HTTP even on a listener with `redirectToHttps`. Default false. */
  readonly allowHttp?: boolean
}

export interface RegistryConfig {
  /** Base URL of the master's registry; null: the embedded registry. */
  readonly url: string | null
  readonly token: string | null
  readonly cacheSize: number
  readonly cacheTtlMs: number
  readonly negativeTtlMs: number
  readonly staleIfErrorMs: number
}

export interface WorkspacesConfig {
  /** Host names ending with this suffix are workspace host routes (e.g. ".ws.example.com"). */
  readonly hostSuffix: string | null
  /** Master cookies removed from requests to workspace servers. */
  readonly stripCookies: readonly string[]
  readonly registry: RegistryConfig
}

export interface AdminConfig {
  readonly host: string
  readonly port: number
  readonly token: string | null
  readonly tokenFile: string | null
  /**
   * Allow route and upstream targets on link-local / cloud metadata addresses
   * (169.254.0.0/16, fe80::/10, ...). Default false: such a target is a config error.
   */
  readonly allowMetadataTargets: boolean
}

export interface TimeoutsConfig {
  readonly connectMs: number
  readonly headersMs: number
  readonly responseMs: number
  readonly tunnelIdleMs: number
  readonly shutdownGraceMs: number
  /** Idle time before a client keep-alive connection is closed. */
  readonly keepAliveMs: number
  /** Idle time before a pooled upstream connection is closed. */
  readonly upstreamIdleMs: number
  /** Time a client may take none of a response before it is cut off. */
  readonly clientReadMs: number
}

export interface LimitsConfig {
  readonly maxHeaderBytes: number
  readonly maxHeaderCount: number
  readonly maxBodyBytes: number
  readonly maxConnections: number
  /** Open connections allowed per client address; 0: no per-client limit. */
  readonly maxConnectionsPerClient: number
}

export interface AccessLogConfig {
  readonly enabled: boolean
  /** File the access log is appended to; null: stdout. */
  readonly path: string | null
}

export interface GatewayConfig {
  readonly listeners: readonly ListenerConfig[]
  readonly upstreams: Readonly<Record<string, UpstreamConfig>>
  readonly routes: readonly RouteConfig[]
  readonly workspaces: WorkspacesConfig
  readonly admin: AdminConfig
  readonly timeouts: TimeoutsConfig
  readonly limits: LimitsConfig
  /** Where the embedded registry and admin routes persist; relative to the config file. */
  readonly stateFile: string
  /** Worker processes; "auto": one per CPU core. */
  readonly workers: number | 'auto'
  readonly accessLog: AccessLogConfig
}

/** One config problem: `path` is a JSON path (`listeners[2].port`, `upstreams.master.targets[0]`). */
export interface ConfigIssue {
  readonly path: string
  readonly message: string
}
