// The configuration's shape, as the contract (shared/CONTRACT.md) names it. Every object the
// gateway runs on is the frozen result of `loadConfig` (config/load.ts): defaults applied,
// validated, deep-frozen. Units are in the names (`Ms`, `Bytes`).

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
}

export interface UpstreamConfig {
  /** "host:port" targets. */
  readonly targets: readonly string[]
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
}

export interface TimeoutsConfig {
  readonly connectMs: number
  readonly headersMs: number
  readonly responseMs: number
  readonly tunnelIdleMs: number
  readonly shutdownGraceMs: number
}

export interface LimitsConfig {
  readonly maxHeaderBytes: number
  readonly maxBodyBytes: number
  readonly maxConnections: number
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
}
