// A worker process: serves traffic on the shared listeners, and follows the primary for
// everything that must be one for the cluster (admin routes, the embedded registry, cache
// purges, reloads, shutdown). Signals are the primary's business: a Ctrl-C reaches the whole
// process group, and the primary decides how its workers stop.

import { FileSnapshot } from '../config/file-snapshot.js'
import { loadConfigFile, type LoadedConfig } from '../config/load.js'
import { Gateway } from '../gateway.js'
import { TICKET_KEYS_BYTES } from '../listeners/tls-contexts.js'
import type { LogSink } from '../observability/event-log.js'
import { isMessage, type ToPrimary, type ToWorker } from './messages.js'
import { ReloadFollower } from './reload-follower.js'
import { ReplicaRegistry } from './replica-registry.js'

/** How long a worker waits for the primary's start-config before giving up. */
const START_CONFIG_TIMEOUT_MS = 10_000

/** `p`, or a rejection naming `what` after `ms`. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what} in ${ms} ms`)), ms)
    p.then((v) => { clearTimeout(timer); resolve(v) }, (e: unknown) => { clearTimeout(timer); reject(e as Error) })
  })
}

type StartConfig = Extract<ToWorker, { type: 'start-config' }>

function send(message: ToPrimary): void {
  process.send?.(message)
}

export async function runWorker(loaded: LoadedConfig, log: LogSink): Promise<number> {
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGUSR1'] as const) process.on(signal, () => {})
  const embedded = loaded.config.workspaces.registry.url === null
  const replica = embedded ? new ReplicaRegistry() : undefined
  // Messages that arrive before the gateway is up wait for it (start-config, the registry
  // snapshot and drain aside).
  const early: ToWorker[] = []
  let gw: Gateway | null = null
  let exiting: Promise<number> | null = null
  let finish: (code: number) => void = () => {}
  const done = new Promise<number>((resolve) => { finish = resolve })
  const stop = (): void => {
    exiting ??= (gw === null ? Promise.resolve() : gw.drain()).then(() => 0, () => 1)
    void exiting.then(finish)
  }
  let follower: ReloadFollower | null = null
  const reloads = (g: Gateway): ReloadFollower => (follower ??= new ReloadFollower(g, send))
  let gotStartConfig: (message: StartConfig) => void = () => {}
  const startConfig = new Promise<StartConfig>((resolve) => { gotStartConfig = resolve })
  const handle = (message: ToWorker): void => {
    if (gw === null) {
      if (message.type === 'start-config') gotStartConfig(message)
      else if (message.type === 'registry-snapshot') replica?.applySnapshot(message.snapshot)
      else if (message.type === 'drain') stop()
      else early.push(message)
      return
    }
    const g = gw
    switch (message.type) {
      case 'start-config':
        return // answered once, at start
      case 'registry-snapshot':
        replica?.applySnapshot(message.snapshot)
        return
      case 'registry-event':
        replica?.apply(message.event)
        return
      case 'admin-routes':
        void g.followAdminRoutes(message.routes)
        return
      case 'purge':
        g.cache.purge(message.key)
        return
      case 'reload-prepare':
        void reloads(g).prepare(message).then((result) => {
          if (result.ok) send({ type: 'reload-committed', id: message.id })
        })
        return
      case 'reload-commit':
        reloads(g).commit(message.id)
        return
      case 'reload-abort':
        reloads(g).abort(message.id)
        return
      case 'figures': {
        const o = g.observability
        const stats = o === null ? {} : o.metrics.stats(g, o.accessLog.figures())
        const metrics = o === null ? Promise.resolve('') : o.metrics.prometheus(g, o.accessLog.figures())
        metrics.then((text) => send({ type: 'figures', id: message.id, metrics: text, stats }), () => send({ type: 'figures', id: message.id, metrics: '', stats }))
        return
      }
      case 'reopen-logs':
        g.observability?.reopenLogs()
        return
      case 'drain':
        stop()
        return
    }
  }
  process.on('message', (message: unknown) => { if (isMessage(message)) handle(message as ToWorker) })
  send({ type: 'hello' })
  // The primary is gone (killed, crashed): finish what is in flight and leave.
  process.on('disconnect', stop)
  try {
    const start = await within(startConfig, START_CONFIG_TIMEOUT_MS, 'the primary sent no start-config')
    const ticketKeys = Buffer.from(start.ticketKeys, 'base64')
    if (ticketKeys.length !== TICKET_KEYS_BYTES) throw new Error(`the primary sent ${ticketKeys.length} bytes of session ticket keys, not ${TICKET_KEYS_BYTES}`)
    // After a reload: the files the primary committed, not what is on disk now.
    const snapshot = start.files === null ? null : FileSnapshot.fromWire(start.files)
    const config = snapshot === null ? loaded : await loadConfigFile(loaded.file, snapshot.read)
    gw = await Gateway.start(config, { role: 'worker', registrySource: replica, log, read: snapshot?.read, ticketKeys })
  } catch (err) {
    send({ type: 'failed', message: (err as Error).message })
    return 1
  }
  for (const message of early.splice(0)) handle(message)
  send({ type: 'ready' })
  return done
}
