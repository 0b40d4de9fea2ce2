// The primary of a multi-process gateway (config `workers`): forks the workers that serve
// traffic, keeps one admin API, one state file and one embedded registry for all of them,
// tells every worker about each change, adds their figures up, and restarts a worker that
// dies while the others keep serving.
//
// Workers share each listening socket (node:cluster with SCHED_NONE: the kernel spreads
// connections; round-robin through the primary would cost an IPC message per connection).

import cluster, { type Worker } from 'node:cluster'
import type { FileSnapshot, WireFiles } from '../config/file-snapshot.js'
import type { ConfigIssue, LoadedConfig } from '../config/load.js'
import type { RouteConfig } from '../config/types.js'
import { Gateway, type ClusterHooks, type ReloadVote } from '../gateway.js'
import { newTicketKeys } from '../listeners/tls-contexts.js'
import type { LogSink } from '../observability/event-log.js'
import { gatewayEvent } from '../observability/channels.js'
import { isMessage, type ToPrimary, type ToWorker } from './messages.js'

/** How long a worker gets, by default, to answer a figures request or prepare a reload. */
const ASK_TIMEOUT_MS = 5000
/**
 * The most a reload sends each worker of the files it read (before base64). Certificates and
 * configs are kilobytes, error pages at most 1 MiB each: more is a path to the wrong file.
 */
const MAX_RELOAD_FILES_BYTES = 8 * 1024 * 1024
/** A worker asked to go (it did not confirm a reload) is killed if it is still there after this. */
const REPLACE_KILL_AFTER_MS = 30_000
/** A worker that dies sooner than this after starting is restarted with growing delays. */
const STABLE_AFTER_MS = 10_000

interface WorkerState {
  worker: Worker
  slot: number
  ready: boolean
  startedAt: number
}

/** One worker's answer to an ask (null: none in time), and the id it was asked under. */
interface Answer<T> {
  state: WorkerState
  id: number
  answer: T | null
}

export interface PoolOptions {
  /** How long a worker gets to answer (figures, reload prepare); default 5 s. */
  askTimeoutMs?: number
}

export class WorkerPool implements ClusterHooks {
  private readonly workers = new Map<number, WorkerState>()
  private gateway: Gateway | null = null
  private stopping = false
  private nextId = 1
  private readonly pending = new Map<number, (message: ToPrimary) => void>()
  private readonly restartDelay = new Map<number, number>()
  private readonly askTimeoutMs: number
  /** The files of the last reload committed everywhere; null: none since start. */
  private committedFiles: WireFiles | null = null

  constructor(
    private readonly count: number,
    private readonly log: LogSink,
    /** The run's TLS session ticket keys, the same for every worker it ever starts. */
    private readonly ticketKeys: Buffer,
    options: PoolOptions = {},
  ) {
    this.askTimeoutMs = options.askTimeoutMs ?? ASK_TIMEOUT_MS
  }

  attach(gateway: Gateway): void {
    this.gateway = gateway
    gateway.registry?.subscribe((event) => this.broadcast({ type: 'registry-event', event }))
  }

  /** Forks every worker; resolves when all listen, rejects with the first one's failure. */
  async start(): Promise<void> {
    const starts: Promise<void>[] = []
    for (let slot = 0; slot < this.count; slot++) starts.push(this.fork(slot))
    await Promise.all(starts)
  }

  private fork(slot: number): Promise<void> {
    const worker = cluster.fork({ GATEWAY_WORKER_SLOT: String(slot) })
    const state: WorkerState = { worker, slot, ready: false, startedAt: Date.now() }
    this.workers.set(worker.id, state)
    return new Promise<void>((resolve, reject) => {
      worker.on('message', (message: unknown) => {
        if (!isMessage(message)) return
        const m = message as ToPrimary
        switch (m.type) {
          case 'hello': {
            this.sendTo(worker, { type: 'start-config', files: this.committedFiles, ticketKeys: this.ticketKeys.toString('base64') })
            const registry = this.gateway?.registry
            if (registry) void registry.list().then((snapshot) => this.sendTo(worker, { type: 'registry-snapshot', snapshot }))
            return
          }
          case 'ready':
            state.ready = true
            // Routes may have changed while it started from the state file.
            if (this.gateway !== null) this.sendTo(worker, { type: 'admin-routes', routes: this.gateway.adminManagedRoutes })
            resolve()
            return
          case 'failed':
            reject(new Error(m.message))
            return
          default:
            this.pending.get(m.id)?.(m)
        }
      })
      worker.on('exit', (code, signal) => {
        this.workers.delete(worker.id)
        if (!state.ready) reject(new Error(`worker ${slot} exited during start (${signal ?? code})`))
        if (this.stopping) return
        this.onDied(state, code, signal)
      })
    })
  }

  private onDied(state: WorkerState, code: number | null, signal: string | null): void {
    const quick = Date.now() - state.startedAt < STABLE_AFTER_MS
    const delay = quick ? Math.min(30_000, (this.restartDelay.get(state.slot) ?? 250) * 2) : 250
    this.restartDelay.set(state.slot, delay)
    this.log(`worker ${state.slot} exited (${signal ?? `code ${code}`}); restarting it in ${delay} ms`)
    if (gatewayEvent.hasSubscribers) gatewayEvent.publish({ event: 'worker_restarted', slot: state.slot, code, signal, delayMs: delay })
    setTimeout(() => {
      if (this.stopping) return
      this.fork(state.slot).catch((err: unknown) => this.log(`worker ${state.slot} failed to restart: ${(err as Error).message}`))
    }, delay).unref()
  }

  private sendTo(worker: Worker, message: ToWorker): void {
    if (worker.isConnected()) worker.send(message, undefined, () => {})
  }

  private broadcast(message: ToWorker): void {
    for (const { worker } of this.workers.values()) this.sendTo(worker, message)
  }

  /** Asks every ready worker; answers of type `type` arrive or time out. */
  private ask<T extends ToPrimary>(type: T['type'], make: (id: number) => ToWorker): Promise<Answer<T>[]> {
    const asks = [...this.workers.values()].filter((s) => s.ready).map(async (state) => {
      const id = this.nextId++
      const answer = this.answerTo<T>(id, type)
      this.sendTo(state.worker, make(id))
      return { state, id, answer: await answer }
    })
    return Promise.all(asks)
  }

  /** A worker's message of `type` under `id`; null when none comes within the ask timeout. */
  private answerTo<T extends ToPrimary>(id: number, type: T['type']): Promise<T | null> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => { this.pending.delete(id); resolve(null) }, this.askTimeoutMs)
      this.pending.set(id, (m) => {
        if (m.type !== type) return
        clearTimeout(timer)
        this.pending.delete(id)
        resolve(m as T)
      })
    })
  }

  // ---- ClusterHooks -------------------------------------------------------------------

  async figures(): Promise<{ metrics: string[]; stats: Record<string, unknown>[] }> {
    const answers = (await this.ask<ToPrimary & { type: 'figures' }>('figures', (id) => ({ type: 'figures', id }))).flatMap((a) => a.answer ?? [])
    return { metrics: answers.map((a) => a.metrics), stats: answers.map((a) => a.stats) }
  }

  readiness(): { ready: boolean; reasons: string[] } {
    const ready = [...this.workers.values()].filter((s) => s.ready).length
    const reasons = ready < this.count ? [`${ready} of ${this.count} workers are serving`] : []
    return { ready: reasons.length === 0, reasons }
  }

  adminRoutesChanged(routes: readonly RouteConfig[]): void {
    this.broadcast({ type: 'admin-routes', routes })
  }

  cachePurged(key: string | undefined): void {
    this.broadcast(key === undefined ? { type: 'purge' } : { type: 'purge', key })
  }

  async prepareReload(files: FileSnapshot): Promise<ReloadVote> {
    const wire = await files.toWire(MAX_RELOAD_FILES_BYTES)
    if (typeof wire === 'string') return { issues: [{ path: '', message: wire }] }
    // A worker that lost the primary's word still lets go of what it bound, after twice the
    // time the primary waits for any answer.
    const giveUpMs = 2 * this.askTimeoutMs
    const answers = await this.ask<ToPrimary & { type: 'reload-prepared' }>('reload-prepared', (id) => ({ type: 'reload-prepare', id, files: wire, giveUpMs }))
    const issues: ConfigIssue[] = []
    for (const { state, answer } of answers) {
      const who = `worker ${state.slot} (pid ${state.worker.process.pid})`
      if (answer === null) issues.push({ path: '', message: `${who} did not prepare the reload in ${this.askTimeoutMs} ms` })
      else for (const e of answer.errors) issues.push({ path: e.path, message: `${who}: ${e.message}` })
    }
    return {
      issues,
      // Every worker asked hears the outcome, including one that has not answered yet. On a
      // commit, those that prepared are waited for until they serve the new config.
      settle: async (committed) => {
        if (committed) this.committedFiles = wire
        const confirmations: Promise<string | null>[] = []
        for (const { state, id, answer } of answers) {
          if (committed && answer !== null) confirmations.push(this.confirmCommit(state, id))
          this.sendTo(state.worker, { type: committed ? 'reload-commit' : 'reload-abort', id })
        }
        return (await Promise.all(confirmations)).filter((w): w is string => w !== null)
      },
    }
  }

  /**
   * Resolves null once the worker says the reload `id` is in force. A worker that does not say
   * so in time is replaced: its replacement starts on the committed files, so no worker keeps
   * serving the old config. Resolves with a warning that says so.
   */
  private async confirmCommit(state: WorkerState, id: number): Promise<string | null> {
    if ((await this.answerTo(id, 'reload-committed')) !== null) return null
    const warning = `worker ${state.slot} (pid ${state.worker.process.pid}) did not confirm the reload in ${this.askTimeoutMs} ms; it is replaced by a worker started on the reloaded config`
    this.log(warning)
    this.replace(state.worker)
    return warning
  }

  /** Asks a worker to drain and exit (it is restarted); kills it if it has not gone in time. */
  private replace(worker: Worker): void {
    this.sendTo(worker, { type: 'drain' })
    const kill = setTimeout(() => worker.process.kill('SIGKILL'), REPLACE_KILL_AFTER_MS)
    kill.unref()
    worker.once('exit', () => clearTimeout(kill))
  }

  reopenLogs(): void {
    this.broadcast({ type: 'reopen-logs' })
  }

  /** Drains every worker (each finishes what it serves, up to shutdownGraceMs) and waits. */
  async stop(graceMs: number): Promise<void> {
    this.stopping = true
    const exits = [...this.workers.values()].map(({ worker }) => new Promise<void>((resolve) => {
      if (worker.isDead()) return resolve()
      worker.once('exit', () => resolve())
      this.sendTo(worker, { type: 'drain' })
    }))
    const timer = setTimeout(() => { for (const { worker } of this.workers.values()) worker.process.kill('SIGKILL') }, graceMs + 5000)
    await Promise.all(exits)
    clearTimeout(timer)
  }
}

/** "auto": one worker per core. */
export function workerCount(workers: number | 'auto', cores: number): number {
  return workers === 'auto' ? Math.max(1, cores) : workers
}

/** Starts the primary and its workers; resolves with the running pieces. */
export async function startPrimary(loaded: LoadedConfig, count: number, log: LogSink, options: PoolOptions = {}): Promise<{ gateway: Gateway; pool: WorkerPool }> {
  cluster.schedulingPolicy = cluster.SCHED_NONE
  // Made once here and handed to every worker: workers share each listening socket, so a
  // client's next connection may land on any of them.
  const ticketKeys = newTicketKeys()
  const pool = new WorkerPool(count, log, ticketKeys, options)
  const gateway = await Gateway.start(loaded, { role: 'primary', cluster: pool, log, ticketKeys })
  pool.attach(gateway)
  try {
    await pool.start()
  } catch (err) {
    await pool.stop(0)
    await gateway.close()
    throw err
  }
  log(`${count} workers serving`)
  return { gateway, pool }
}
