// Owns the lifecycle: builds every part from a validated config, starts the listeners,
// applies route changes and reloads as whole swaps, drains on shutdown.

import net, { type AddressInfo } from 'node:net'
import { storedAdminRoutes } from './admin/admin-routes.js'
import { AdminServer } from './admin/admin-server.js'
import { describeToken, prepareAdminReload, startupAdminToken } from './admin/admin-settings.js'
import type { AdminToken } from './admin/admin-token.js'
import { withRouteDefaults } from './config/defaults.js'
import { FileSnapshot, readFromDisk, type FileReader } from './config/file-snapshot.js'
import { isForbiddenTarget, parseTarget } from './config/validate.js'
import { ConfigError, loadConfigFile, type ConfigIssue, type LoadedConfig } from './config/load.js'
import type { GatewayConfig, ListenerConfig, RouteConfig } from './config/types.js'
import { defaultCertificateHosts, ensureCertificates } from './listeners/certificate-authority.js'
import { Engine, type EngineSettings } from './listeners/engine.js'
import { Listener } from './listeners/listener.js'
import { StartupError, bindError } from './listeners/startup-error.js'
import { loadTlsContexts, newTicketKeys, type TlsContexts } from './listeners/tls-contexts.js'
import { gatewayEvent } from './observability/channels.js'
import type { LogSink } from './observability/event-log.js'
import { Observability } from './observability/observability.js'
import { EmbeddedRegistry } from './registry/embedded-registry.js'
import { RegistryClient } from './registry/registry-client.js'
import type { RegistrySource } from './registry/registry-source.js'
import { RegistryStore, type StateDocument } from './registry/registry-store.js'
import type { ServerEntry } from './registry/server-entry.js'
import { RouteCache } from './routing/route-cache.js'
import { RouteTable } from './routing/route-table.js'
import { CompiledRoute, Router, type RouteSource } from './routing/router.js'
import { DeadlineSweeper } from './timers.js'
import { HealthChecker } from './upstream/health-checker.js'
import { TargetSet } from './upstream/target-set.js'
import type { HealthSettings, Target } from './upstream/target.js'
import { UpstreamGroup } from './upstream/upstream-group.js'
import { mergePrometheus, mergeStats } from './workers/merge-figures.js'

/** Idle pooled connections kept per upstream target. */
const MAX_IDLE_PER_TARGET = 256
/** Passive health of targets listed on a route itself (upstream groups set their own). */
const ROUTE_TARGET_HEALTH = Object.freeze({ maxFails: 3, cooldownMs: 10_000 })

export interface ReloadResult {
  ok: boolean
  errors?: ConfigIssue[]
  /** Done, but something the operator should know (a worker replaced to get it done). */
  warnings?: string[]
}

/**
 * Whether a prepared reload may be committed: no issues means yes. `settle` hears what this
 * process then did (committed: true), so a primary can tell its workers the same; it resolves
 * when they have done it too, with warnings about any that had to be replaced.
 */
export interface ReloadVote {
  readonly issues: ConfigIssue[]
  settle?(committed: boolean): Promise<string[]>
}

/** A route table not yet in force; `use()` readies its targets and gives it for the router. */
interface CompiledRoutes {
  readonly table: RouteTable<CompiledRoute>
  use(): RouteTable<CompiledRoute>
}

/** Listeners a prepared reload bound, kept, and took a port from. */
interface BoundListeners {
  readonly added: Listener[]
  readonly keep: Set<string>
  /** Listeners that gave their port to a new one (HTTP <-> HTTPS on one address). */
  readonly displaced: Listener[]
}

/** Everything a reload checked and built, waiting for commit (or release). */
interface PreparedReload extends BoundListeners {
  readonly loaded: LoadedConfig
  readonly contexts: Map<string, TlsContexts>
  readonly pages: Map<string, string>
  readonly routes: CompiledRoutes
  /** The admin token resolved again; null in a worker (no admin API). */
  readonly token: AdminToken | null
}

/**
 * How this process takes part: alone (`single`), or with `workers` processes (node:cluster):
 * the `primary` owns the admin API, the state file and the embedded registry and serves no
 * traffic; each `worker` serves traffic and follows the primary over IPC (src/workers/).
 */
export type Role = 'single' | 'primary' | 'worker'

/** What a primary gateway asks of its workers (src/workers/primary.ts implements it). */
export interface ClusterHooks {
  /** Every live worker's Prometheus text and /stats object. */
  figures(): Promise<{ metrics: string[]; stats: Record<string, unknown>[] }>
  /** Whether every worker is up and listening. */
  readiness(): { ready: boolean; reasons: string[] }
  adminRoutesChanged(routes: readonly RouteConfig[]): void
  cachePurged(key: string | undefined): void
  /**
   * Asks every worker to prepare a reload from these files (read once, here); the vote has
   * their problems, none when all are prepared, and tells them to commit or abort.
   */
  prepareReload(files: FileSnapshot): Promise<ReloadVote>
}

export interface StartOptions {
  /** Start-up lines and operational events (default: JSON lines on stderr). */
  log?: LogSink
  /** Where GATEWAY_ADMIN_TOKEN is read (default: process.env). */
  env?: NodeJS.ProcessEnv
  /** Default "single". */
  role?: Role
  /** A worker's view of the primary's embedded registry (IPC-fed). */
  registrySource?: RegistrySource
  /** A primary's link to its workers. */
  cluster?: ClusterHooks
  /** How certificates and error pages are read (default: from disk). */
  read?: FileReader
  /** The run's TLS session ticket keys (a worker gets the primary's); default: new ones. */
  ticketKeys?: Buffer
}

export class Gateway {
  readonly sweeper: DeadlineSweeper
  readonly targets: TargetSet
  readonly engine: Engine
  readonly store: RegistryStore
  readonly registry: EmbeddedRegistry | null
  readonly registrySource: RegistrySource
  readonly cache: RouteCache
  readonly listeners = new Map<string, Listener>()
  admin: AdminServer | null = null
  /** Metrics, access log and event log (diagnostics channel subscribers); null until start. */
  observability: Observability | null = null
  /** Where GATEWAY_ADMIN_TOKEN is read, at start and on every reload. */
  private env: NodeJS.ProcessEnv = process.env
  role: Role = 'single'
  private clusterHooks: ClusterHooks | null = null
  private adminRoutes: readonly RouteConfig[]
  /** Maintenance pages by upstream name (read at start and reload). */
  private errorPages: ReadonlyMap<string, string>
  private health: HealthChecker
  private routesVersion = 1
  private draining: Promise<void> | null = null
  private closed = false

  private constructor(
    public loaded: LoadedConfig,
    store: RegistryStore,
    registry: EmbeddedRegistry | null,
    source: RegistrySource,
    errorPages: ReadonlyMap<string, string>,
    /** Every TLS context of this run gets them, at start and at every reload. */
    private readonly ticketKeys: Buffer,
  ) {
    const config = loaded.config
    this.errorPages = errorPages
    this.store = store
    this.registry = registry
    this.registrySource = source
    this.adminRoutes = readAdminRoutes(store)
    let sweeps = 0
    // Every 40 sweeps (10 s): forget workspace targets nothing uses any more.
    this.sweeper = new DeadlineSweeper(() => { if (++sweeps % 40 === 0) this.targets.prune((key) => this.isStaticTarget(key)) })
    this.targets = new TargetSet(this.sweeper, poolSettings(config))
    this.cache = new RouteCache(source, config.workspaces.registry)
    const router = new Router(this.compileRoutes(config, this.adminRoutes).use(), this.cache, config.workspaces.hostSuffix, this.targets, config.admin.allowMetadataTargets)
    this.engine = new Engine(router, engineSettings(config), this.sweeper)
    this.cache.on('server-changed', (key, previous, next) => this.onServerChanged(key, previous, next))
    this.health = this.healthChecker(config)
  }

  /** The primary serves no traffic: health checks belong to the processes that use them. */
  private startHealthChecks(): void {
    if (this.role !== 'primary') this.health.start()
  }

  private healthChecker(config: GatewayConfig): HealthChecker {
    const groups = Object.entries(config.upstreams).filter(([, up]) => up.healthCheck !== undefined)
      .map(([name, up]) => ({ name, check: up.healthCheck!, targets: up.targets.map((t) => this.targets.get(t)) }))
    return new HealthChecker(groups)
  }

  get config(): GatewayConfig {
    return this.loaded.config
  }

  /** Builds and starts a gateway; throws StartupError (or StateFileError) on failure. */
  static async start(loaded: LoadedConfig, options: StartOptions = {}): Promise<Gateway> {
    const log = options.log ?? logLine
    const role = options.role ?? 'single'
    const config = loaded.config
    if (role !== 'worker') {
      // Workers never create files: the primary did, before forking them.
      const tlsConfigs = config.listeners.filter((l) => l.tls !== undefined).map((l) => l.tls!)
      const created = await ensureCertificates(tlsConfigs, defaultCertificateHosts(config.workspaces.hostSuffix))
      for (const file of created) log(`created self-signed certificate file ${file} (replace it with a real certificate in production)`)
    }
    const ticketKeys = options.ticketKeys ?? newTicketKeys()
    const contexts = await loadAllTls(config, ticketKeys, options.read)
    if (!(contexts instanceof Map)) throw new StartupError(`invalid certificates:\n${contexts.map((i) => `  ${i.path}: ${i.message}`).join('\n')}`)
    const store = await RegistryStore.open(config.stateFile)
    let lastRoutesVersion: number
    try {
      storedAdminRoutes(store.document.routes, config.stateFile, config)
      lastRoutesVersion = storedRoutesVersion(store.document, config.stateFile)
    } catch (err) {
      throw new StartupError((err as Error).message)
    }
    const adminToken = await startupAdminToken(config, options.env ?? process.env)
    const reg = config.workspaces.registry
    let running: Gateway | null = null
    let registry: EmbeddedRegistry | null = null
    let source: RegistrySource
    if (options.registrySource !== undefined) {
      source = options.registrySource
    } else if (reg.url === null) {
      registry = new EmbeddedRegistry(store, {
        // The config in force, not the one at start: a reload may change the rule.
        targetRule: (target) => !(running?.config ?? config).admin.allowMetadataTargets && isMetadataTarget(target)
          ? `${target} is a link-local or cloud-metadata address (allowed only with admin.allowMetadataTargets)`
          : null,
      })
      source = registry
    } else {
      source = new RegistryClient({ url: reg.url, token: reg.token })
    }
    const pages = await loadErrorPages(config, options.read)
    if (!(pages instanceof Map)) throw new StartupError(`invalid error pages:\n${pages.map((i) => `  ${i.path}: ${i.message}`).join('\n')}`)
    const gw = new Gateway(loaded, store, registry, source, pages, ticketKeys)
    running = gw
    if (role !== 'worker') {
      // The routes version goes on from the last one served before a restart, so that an
      // If-Match from then cannot match routes it never saw.
      gw.routesVersion = lastRoutesVersion + 1
      await gw.persistRoutesVersion()
    }
    gw.env = options.env ?? process.env
    gw.role = role
    gw.clusterHooks = options.cluster ?? null
    gw.startHealthChecks()
    try {
      gw.observability = await Observability.start(config.accessLog, log)
      if (role !== 'primary') for (const lc of config.listeners) await gw.openListener(lc, contexts.get(lc.name) ?? null)
      if (role !== 'worker') gw.admin = await AdminServer.start(gw, adminToken)
    } catch (err) {
      await gw.close()
      throw err
    }
    for (const [name, addr] of Object.entries(gw.addresses())) {
      const l = gw.listeners.get(name)
      log(`${name} listening on ${addr.address}:${addr.port}${l === undefined ? '' : ` (${l.tls ? 'https' : 'http'}${l.config.workspacesOnly ? ', workspaces only' : ''})`}`)
    }
    if (role !== 'worker') {
      log(`registry: ${reg.url === null ? `embedded, state in ${config.stateFile}` : reg.url}`)
      log(describeToken(adminToken))
    }
    return gw
  }

  private async openListener(lc: ListenerConfig, contexts: TlsContexts | null): Promise<Listener> {
    const listener = new Listener(lc, this.engine, contexts)
    await listener.listen()
    this.listeners.set(lc.name, listener)
    return listener
  }

  /** Bound addresses by listener name (port 0 resolved), and "admin". */
  addresses(): Record<string, AddressInfo> {
    const out: Record<string, AddressInfo> = {}
    for (const [name, l] of this.listeners) out[name] = l.address()
    if (this.admin !== null) out.admin = this.admin.address()
    return out
  }

  /**
   * Ready when every configured listener is bound and the registry can answer: the embedded
   * one always can; a remote one when its event stream is connected or the cache holds
   * entries it can serve while the stream reconnects.
   */
  readiness(): { ready: boolean; reasons: string[] } {
    const reasons: string[] = []
    if (this.engine.draining) reasons.push('shutting down')
    if (this.clusterHooks !== null) reasons.push(...this.clusterHooks.readiness().reasons)
    else for (const lc of this.config.listeners) if (!this.listeners.has(lc.name)) reasons.push(`listener ${lc.name} is not bound`)
    if (this.registry === null) {
      const stats = this.cache.stats()
      if (!stats.connected && stats.size === 0) reasons.push('the registry event stream is not connected and the route cache is empty')
    }
    return { ready: reasons.length === 0, reasons }
  }

  // ---- figures (for the admin API) ----------------------------------------------------

  /** GET /metrics: this process's figures, or with workers, all of theirs added up. */
  async metricsText(): Promise<string> {
    if (this.clusterHooks !== null) return mergePrometheus((await this.clusterHooks.figures()).metrics)
    const o = this.observability
    return o === null ? '' : o.metrics.prometheus(this, o.accessLog.figures())
  }

  /** GET /stats: as metricsText. */
  async statsJson(): Promise<Record<string, unknown>> {
    if (this.clusterHooks !== null) {
      const all = (await this.clusterHooks.figures()).stats
      return { workers: all.length, ...mergeStats(all) }
    }
    const o = this.observability
    return o === null ? {} : o.metrics.stats(this, o.accessLog.figures())
  }

  /** POST /cache/purge: here, and in every worker. */
  purgeCache(key?: string): void {
    this.cache.purge(key)
    this.clusterHooks?.cachePurged(key)
  }

  // ---- routes -------------------------------------------------------------------------

  get version(): number {
    return this.routesVersion
  }

  /** Config routes first, then admin routes (an admin route with the same host and prefix wins). */
  routes(): { version: number; routes: (RouteConfig & { source: RouteSource })[] } {
    return {
      version: this.routesVersion,
      routes: [
        ...this.config.routes.map((r) => ({ ...r, source: 'config' as const })),
        ...this.adminRoutes.map((r) => ({ ...r, source: 'admin' as const })),
      ],
    }
  }

  get adminManagedRoutes(): readonly RouteConfig[] {
    return this.adminRoutes
  }

  /**
   * Replaces the admin-managed routes (already validated by the caller). Persisted first: a
   * change that cannot be written is not applied. Then one reference swap.
   */
  setAdminRoutes(routes: readonly RouteConfig[]): Promise<number> {
    return this.serially(() => this.applyAdminRoutes(routes))
  }

  /**
   * Route changes and reloads both build a table from (config, admin routes) and swap it in
   * after awaiting I/O: run one at a time, so neither swaps in a table built from what the
   * other has since replaced.
   */
  private serially<T>(change: () => Promise<T>): Promise<T> {
    const run = this.changes.then(change, change)
    this.changes = run.catch(() => {})
    return run
  }

  private changes: Promise<unknown> = Promise.resolve()

  /**
   * Records the routes version in the state file. Best effort: a state file that cannot be
   * written costs only the guarantee that versions never repeat across a restart, and says so.
   */
  private async persistRoutesVersion(): Promise<void> {
    const version = this.routesVersion
    try {
      await this.store.update((doc) => {
        if (doc.routesVersion === version) return false
        doc.routesVersion = version
      })
    } catch (err) {
      if (gatewayEvent.hasSubscribers) {
        gatewayEvent.publish({ event: 'state_file_error', message: `cannot record routes version ${version} in ${this.store.file}: ${(err as Error).message}; after a restart, versions may repeat` })
      }
    }
  }

  /**
   * A worker's copy of the admin routes the primary validated and persisted: applied, never
   * written (the primary owns the state file).
   */
  followAdminRoutes(routes: readonly RouteConfig[]): Promise<number> {
    if (JSON.stringify(routes) === JSON.stringify(this.adminRoutes)) return Promise.resolve(this.routesVersion)
    return this.serially(() => this.applyAdminRoutes(routes, false))
  }

  private async applyAdminRoutes(routes: readonly RouteConfig[], persist = true): Promise<number> {
    const frozen = Object.freeze(routes.map((r) => Object.freeze({ ...r })))
    const table = this.compileRoutes(this.config, frozen)
    if (persist) {
      const version = this.routesVersion + 1
      await this.store.update((doc) => {
        doc.routes = frozen
        doc.routesVersion = version
      })
    }
    this.clusterHooks?.adminRoutesChanged(frozen)
    this.adminRoutes = frozen
    this.engine.router.table = table.use()
    this.routesVersion++
    if (gatewayEvent.hasSubscribers) gatewayEvent.publish({ event: 'routes_changed', version: this.routesVersion, adminRoutes: frozen.length })
    return this.routesVersion
  }

  /**
   * Builds a route table. Targets are shared with the table in force, so their health settings
   * are only given with `use()`: a reload or route change that is then refused changes nothing.
   */
  private compileRoutes(config: GatewayConfig, adminRoutes: readonly RouteConfig[], errorPages = this.errorPages): CompiledRoutes {
    const groups = new Map<string, UpstreamGroup>()
    const health: [Target, HealthSettings][] = []
    const targetsOf = (list: readonly string[], settings: HealthSettings) => list.map((key) => {
      const t = this.targets.get(key)
      health.push([t, settings])
      return t
    })
    for (const [name, up] of Object.entries(config.upstreams)) {
      const health = { maxFails: up.maxFails, cooldownMs: up.cooldownMs }
      groups.set(name, new UpstreamGroup(name, targetsOf(up.targets, health), up.balance ?? 'round-robin', errorPages.get(name) ?? null))
    }
    const compile = (r: RouteConfig, source: RouteSource): CompiledRoute => {
      const group = r.upstream !== undefined
        ? groups.get(r.upstream)
        : new UpstreamGroup(`route:${r.id}`, targetsOf(r.targets ?? [], ROUTE_TARGET_HEALTH), 'round-robin')
      if (group === undefined) throw new Error(`route ${r.id} names unknown upstream ${r.upstream}`) // validated before: a bug
      return new CompiledRoute(r.id, r.host, r.pathPrefix, source, group, r.allowHttp === true)
    }
    const table = new RouteTable([...config.routes.map((r) => compile(r, 'config')), ...adminRoutes.map((r) => compile(r, 'admin'))])
    return {
      table,
      use: () => {
        for (const [t, settings] of health) t.health = settings
        return table
      },
    }
  }

  private staticKeys: { table: RouteTable<CompiledRoute>; keys: Set<string> } | null = null

  /** Does a static route (of the table in force) name this target? */
  private isStaticTarget(key: string): boolean {
    const table = this.engine.router.table
    if (this.staticKeys === null || this.staticKeys.table !== table) {
      const keys = new Set<string>()
      for (const r of table.routes) for (const t of r.group.targets) keys.add(t.key)
      this.staticKeys = { table, keys }
    }
    return this.staticKeys.keys.has(key)
  }

  // ---- workspace teardown -------------------------------------------------------------

  /** A workspace server went away or moved: its tunnels and idle connections go now. */
  private onServerChanged(key: string, previous: ServerEntry | null, next: ServerEntry | null): void {
    const closed = this.engine.closeTunnels((t) => t.info.workspaceKey === key && (next === null || next.target !== t.info.target))
    if (previous !== null && (next === null || next.target !== previous.target) && !this.isStaticTarget(previous.target)) {
      this.targets.peek(previous.target)?.closeIdle()
    }
    if (gatewayEvent.hasSubscribers) gatewayEvent.publish({ event: 'workspace_server_changed', key, previous: previous?.target ?? null, next: next?.target ?? null, tunnelsClosed: closed })
  }

  // ---- reload -------------------------------------------------------------------------

  /**
   * Re-reads the config file and certificates. Everything is checked, and new listeners bound,
   * before anything changes; on any problem (here, or with workers in any worker) the running
   * config and certificates stay everywhere.
   */
  reload(): Promise<ReloadResult> {
    const files = FileSnapshot.recording()
    return this.serially(() => this.runReload(files, (next) => this.workersVote(next, files)))
  }

  /**
   * A worker's part in the primary's reload: prepared from the files the primary read, then
   * committed or aborted as `vote` answers (the primary's word). In turn with route changes,
   * from prepare to commit or abort.
   */
  followReload(files: FileSnapshot, vote: () => Promise<ReloadVote>): Promise<ReloadResult> {
    return this.serially(() => this.runReload(files, vote))
  }

  /** Prepare, then commit when `vote` finds no problem, else abort: all of it or none. */
  private async runReload(files: FileSnapshot, vote: (next: GatewayConfig) => Promise<ReloadVote>): Promise<ReloadResult> {
    const prepared = await this.prepareReload(files)
    if (Array.isArray(prepared)) return this.reloadFailed(prepared)
    let verdict: ReloadVote
    try {
      verdict = await vote(prepared.loaded.config)
    } catch (err) {
      verdict = { issues: [{ path: '', message: (err as Error).message }] }
    }
    if (verdict.issues.length > 0) {
      await releaseListeners(prepared.added, prepared.displaced)
      await verdict.settle?.(false)
      return this.reloadFailed(verdict.issues)
    }
    this.commitReload(prepared)
    const warnings = (await verdict.settle?.(true)) ?? []
    // Recorded once the new version is served (with workers: once they say they serve it).
    if (this.role !== 'worker') await this.persistRoutesVersion()
    if (gatewayEvent.hasSubscribers) gatewayEvent.publish({ event: 'reload', ok: true, version: this.routesVersion, ...(warnings.length > 0 ? { warnings } : {}) })
    return warnings.length > 0 ? { ok: true, warnings } : { ok: true }
  }

  /**
   * A primary's workers must all prepare the reload, from the bytes read here, before any
   * process commits it. Alone, there is nobody to ask.
   */
  private async workersVote(next: GatewayConfig, files: FileSnapshot): Promise<ReloadVote> {
    if (this.clusterHooks === null) return { issues: [] }
    // The primary binds no traffic listener: a new address it cannot bind is refused here
    // rather than in every worker.
    const unbindable = await probeNewAddresses(next.listeners, this.config.listeners)
    if (unbindable.length > 0) return { issues: unbindable }
    return this.clusterHooks.prepareReload(files)
  }

  /**
   * Reads (through `files`) and checks everything, compiles the route table and binds the new
   * listeners. Nothing in force changes: `commitReload` swaps it in, `releaseListeners` undoes
   * the binds.
   */
  private async prepareReload(files: FileSnapshot): Promise<PreparedReload | ConfigIssue[]> {
    let loaded: LoadedConfig
    try {
      loaded = await loadConfigFile(this.loaded.file, files.read)
    } catch (err) {
      if (err instanceof ConfigError) return err.issues.slice()
      return [{ path: '', message: (err as Error).message }]
    }
    const config = loaded.config
    const contexts = await loadAllTls(config, this.ticketKeys, files.read)
    if (!(contexts instanceof Map)) return contexts
    const pages = await loadErrorPages(config, files.read)
    if (!(pages instanceof Map)) return pages
    const issues: ConfigIssue[] = []
    const oldReg = this.config.workspaces.registry
    if (config.workspaces.registry.url !== oldReg.url || config.workspaces.registry.token !== oldReg.token) {
      issues.push({ path: 'workspaces.registry', message: 'changing the registry url or token needs a restart' })
    }
    if (config.stateFile !== this.config.stateFile) issues.push({ path: 'stateFile', message: 'changing the state file needs a restart' })
    const admin = await prepareAdminReload(config, this.config, this.adminRoutes, this.env, this.role !== 'worker')
    if ('errors' in admin) issues.push(...admin.errors)
    let routes: CompiledRoutes
    try {
      routes = this.compileRoutes(config, this.adminRoutes, pages)
    } catch (err) {
      issues.push({ path: 'routes', message: (err as Error).message })
      return issues
    }
    if (issues.length > 0) return issues
    const bound = await this.bindNewListeners(config.listeners, contexts)
    if (Array.isArray(bound)) return bound
    return { loaded, contexts, pages, routes, token: 'token' in admin ? admin.token : null, ...bound }
  }

  /**
   * Binds the listeners a reload adds (a port that cannot be bound fails it with nothing
   * changed). A listener that keeps its address and HTTP or HTTPS keeps its socket; one that
   * switches between them on the same address hands its port over (`displaced`).
   */
  private async bindNewListeners(next: readonly ListenerConfig[], contexts: Map<string, TlsContexts>): Promise<BoundListeners | ConfigIssue[]> {
    const bound: BoundListeners = { added: [], keep: new Set(), displaced: [] }
    // The primary serves no traffic: its workers bind.
    for (const lc of this.role === 'primary' ? [] : next) {
      const current = this.listeners.get(lc.name)
      if (current !== undefined && sameSocket(current.config, lc)) {
        bound.keep.add(lc.name)
        continue
      }
      const l = new Listener(lc, this.engine, contexts.get(lc.name) ?? null)
      l.hold() // its connections are served by the routes it comes with, from the commit on
      try {
        if (current !== undefined && current.config.port === lc.port && current.config.host === lc.host) {
          await current.stopListening() // same address, HTTP <-> HTTPS: the new server takes the port
          bound.displaced.push(current)
        }
        await l.listen()
      } catch (err) {
        await releaseListeners(bound.added, bound.displaced)
        return [{ path: `listeners[${next.indexOf(lc)}]`, message: (err as Error).message }]
      }
      bound.added.push(l)
    }
    return bound
  }

  /** The swap: from here on, everything follows the prepared config. */
  private commitReload(p: PreparedReload): void {
    const config = p.loaded.config
    this.loaded = p.loaded
    this.errorPages = p.pages
    this.health.stop()
    this.health = this.healthChecker(config)
    this.startHealthChecks()
    this.engine.settings = engineSettings(config)
    this.targets.settings = poolSettings(config)
    const router = this.engine.router
    router.table = p.routes.use()
    router.hostSuffix = config.workspaces.hostSuffix
    router.allowMetadataTargets = config.admin.allowMetadataTargets
    this.routesVersion++
    for (const name of p.keep) {
      const l = this.listeners.get(name)!
      l.adopt(config.listeners.find((lc) => lc.name === name)!)
      l.setCertificates(p.contexts.get(name) ?? (undefined as never))
    }
    for (const [name, l] of [...this.listeners]) {
      if (!p.keep.has(name)) {
        this.listeners.delete(name)
        void l.close()
      }
    }
    for (const l of p.added) {
      this.listeners.set(l.name, l)
      l.serve()
    }
    if (p.token !== null) this.admin?.setToken(p.token)
    void this.observability?.configure(config.accessLog)
  }

  private reloadFailed(errors: ConfigIssue[]): ReloadResult {
    if (gatewayEvent.hasSubscribers) gatewayEvent.publish({ event: 'reload', ok: false, errors })
    return { ok: false, errors }
  }

  // ---- shutdown -----------------------------------------------------------------------

  /**
   * Graceful stop: no new connections, idle keep-alive connections closed at once, requests
   * in flight and open tunnels given up to shutdownGraceMs, then everything closed.
   */
  drain(): Promise<void> {
    this.draining ??= this.runDrain()
    return this.draining
  }

  private async runDrain(): Promise<void> {
    const engine = this.engine
    engine.draining = true
    const closing = [...this.listeners.values()].map((l) => l.close())
    for (const c of [...engine.connections]) c.drain()
    this.targets.closeIdle()
    const deadline = Date.now() + this.config.timeouts.shutdownGraceMs
    await new Promise<void>((resolve) => {
      const check = (): void => {
        if (engine.connections.size === 0 || Date.now() >= deadline) {
          clearInterval(timer)
          resolve()
        }
      }
      const timer = setInterval(check, 50)
      check()
    })
    engine.closeTunnels(() => true)
    for (const c of [...engine.connections]) c.socket.destroy()
    await Promise.all(closing)
    await this.close()
  }

  /** Immediate stop: every socket closed. */
  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.engine.draining = true
    const closing = [...this.listeners.values()].map((l) => l.close())
    if (this.admin !== null) closing.push(this.admin.close())
    this.engine.closeTunnels(() => true)
    for (const c of [...this.engine.connections]) c.socket.destroy()
    await Promise.all(closing)
    this.targets.closeIdle()
    this.health.stop()
    this.cache.close()
    if (this.registry !== null) this.registry.close()
    else await (this.registrySource as RegistryClient).close()
    await this.store.idle()
    await this.observability?.close()
    this.sweeper.close()
  }
}

function engineSettings(config: GatewayConfig): EngineSettings {
  return { timeouts: config.timeouts, limits: config.limits, stripCookies: new Set(config.workspaces.stripCookies) }
}

function poolSettings(config: GatewayConfig) {
  return { connectMs: config.timeouts.connectMs, upstreamIdleMs: config.timeouts.upstreamIdleMs, maxIdle: MAX_IDLE_PER_TARGET }
}

/**
 * Binds, then closes at once, every listener address in `next` that no listener in `current`
 * holds (port 0 aside): what cannot be bound is refused before anything changes.
 */
async function probeNewAddresses(next: readonly ListenerConfig[], current: readonly ListenerConfig[]): Promise<ConfigIssue[]> {
  const issues: ConfigIssue[] = []
  for (let i = 0; i < next.length; i++) {
    const lc = next[i]
    if (lc.port === 0 || current.some((c) => c.port === lc.port && c.host === lc.host)) continue
    const probe = net.createServer()
    try {
      await new Promise<void>((resolve, reject) => {
        probe.once('error', reject)
        probe.listen({ host: lc.host, port: lc.port }, () => resolve())
      })
    } catch (err) {
      issues.push({ path: `listeners[${i}]`, message: bindError(`listener "${lc.name}"`, lc.host, lc.port, err as NodeJS.ErrnoException).message })
      continue
    }
    await new Promise<void>((resolve) => probe.close(() => resolve()))
  }
  return issues
}

/**
 * The same listening socket will do: same address, HTTP or HTTPS as before, and PROXY protocol
 * headers read or not as before (the trusted addresses change in place).
 */
function sameSocket(a: ListenerConfig, b: ListenerConfig): boolean {
  return a.port === b.port && a.host === b.host && (a.tls === undefined) === (b.tls === undefined) &&
    (a.proxyProtocol === undefined) === (b.proxyProtocol === undefined)
}

/**
 * Undoes a reload's binds: the new listeners close, and listeners that gave their port to one
 * take it back, so a reload that does not go through changes nothing.
 */
async function releaseListeners(added: readonly Listener[], displaced: readonly Listener[]): Promise<void> {
  for (const a of added) await a.close()
  for (const d of displaced) {
    await d.listen().catch((e: Error) => {
      if (gatewayEvent.hasSubscribers) gatewayEvent.publish({ event: 'listener_error', listener: d.name, message: `could not take its port back after a failed reload: ${e.message}` })
    })
  }
}

async function loadAllTls(config: GatewayConfig, ticketKeys: Buffer, read: FileReader = readFromDisk): Promise<Map<string, TlsContexts> | ConfigIssue[]> {
  const out = new Map<string, TlsContexts>()
  const issues: ConfigIssue[] = []
  for (let i = 0; i < config.listeners.length; i++) {
    const lc = config.listeners[i]
    if (lc.tls === undefined) continue
    const result = await loadTlsContexts(lc.tls, `listeners[${i}].tls`, ticketKeys, read)
    if (Array.isArray(result)) issues.push(...result)
    else out.set(lc.name, result)
  }
  return issues.length > 0 ? issues : out
}

/** Upstreams' `errorPage` files, read whole (bounded: a maintenance page, not a site). */
async function loadErrorPages(config: GatewayConfig, read: FileReader = readFromDisk): Promise<Map<string, string> | ConfigIssue[]> {
  const pages = new Map<string, string>()
  const issues: ConfigIssue[] = []
  for (const [name, up] of Object.entries(config.upstreams)) {
    if (typeof up.errorPage !== 'string') continue
    try {
      const bytes = await read(up.errorPage)
      if (bytes.length > 1024 * 1024) issues.push({ path: `upstreams.${name}.errorPage`, message: `${up.errorPage} is over 1 MiB` })
      else pages.set(name, bytes.toString('utf8'))
    } catch (err) {
      issues.push({ path: `upstreams.${name}.errorPage`, message: `cannot read ${up.errorPage}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}` })
    }
  }
  return issues.length > 0 ? issues : pages
}

/** The last routes version served (state file `routesVersion`), 0 when none was recorded. */
function storedRoutesVersion(document: StateDocument, file: string): number {
  const v = document.routesVersion
  if (v === undefined) return 0
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
    throw new Error(`state file ${file} is invalid: routesVersion must be a non-negative integer, got ${JSON.stringify(v)} (fix it or move it away)`)
  }
  return v
}

/** The state file's admin routes (checked in `start` with storedAdminRoutes). */
function readAdminRoutes(store: RegistryStore): readonly RouteConfig[] {
  const routes = (store.document as { routes?: unknown }).routes
  return Array.isArray(routes) ? Object.freeze((routes as RouteConfig[]).map((r) => withRouteDefaults(r) as RouteConfig)) : Object.freeze([])
}

function isMetadataTarget(target: string): boolean {
  const parsed = parseTarget(target)
  return parsed !== null && isForbiddenTarget(parsed.host)
}

function logLine(message: string, fields?: Record<string, unknown>): void {
  process.stderr.write(`${JSON.stringify({ time: new Date().toISOString(), level: 'info', message, ...fields })}\n`)
}
