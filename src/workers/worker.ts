// A worker process: serves traffic on the shared listeners, and follows the primary for
// everything that must be one for the cluster (admin routes, the embedded registry, cache
// purges, reloads, shutdown). Signals are the primary's business: a Ctrl-C reaches the whole
// process group, and the primary decides how its workers stop.

import type { LoadedConfig } from '../config/load.js'
import { Gateway } from '../gateway.js'
import type { LogSink } from '../observability/event-log.js'
import { isMessage, type ToPrimary, type ToWorker } from './messages.js'
import { ReloadFollower } from './reload-follower.js'
import { ReplicaRegistry } from './replica-registry.js'

/** How long a worker waits for the primary's registry before giving up. */
const SNAPSHOT_TIMEOUT_MS = 10_000

function send(message: ToPrimary): void {
  process.send?.(message)
}

export async function runWorker(loaded: LoadedConfig, log: LogSink): Promise<number> {
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGUSR1'] as const) process.on(signal, () => {})
  const embedded = loaded.config.workspaces.registry.url === null
  const replica = embedded ? new ReplicaRegistry() : undefined
  // Messages that arrive before the gateway is up (the registry snapshot first of all) wait.
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
  let gotSnapshot: () => void = () => {}
  const snapshot = new Promise<void>((resolve) => { gotSnapshot = resolve })
  const handle = (message: ToWorker): void => {
    if (gw === null) {
      if (message.type === 'registry-snapshot') {
        replica?.applySnapshot(message.snapshot)
        gotSnapshot()
      }
      else if (message.type === 'drain') stop()
      else early.push(message)
      return
    }
    const g = gw
    switch (message.type) {
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
        void reloads(g).prepare(message)
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
    gw = await Gateway.start(loaded, { role: 'worker', registrySource: replica, log })
  } catch (err) {
    send({ type: 'failed', message: (err as Error).message })
    return 1
  }
  for (const message of early.splice(0)) handle(message)
  send({ type: 'ready' })
  return done
}
