// A primary in the test process (so its ask timeout can be short) and real worker processes
// running the compiled command, as in production, for the workers suites.

import cluster, { type Worker } from 'node:cluster'
import { loadConfigFile } from '../../src/config/load.js'
import type { Gateway } from '../../src/gateway.js'
import { startPrimary, type PoolOptions, type WorkerPool } from '../../src/workers/primary.js'
import { COMPILED_CLI } from './compiled-cli.js'

export interface TestWorker {
  pid: number
  /** Everything it wrote to stderr so far (its JSON log lines). */
  stderr: () => string
}

export interface WorkerCluster {
  /** In fork order; a replacement for a dead worker is appended. */
  readonly workers: TestWorker[]
  readonly gateway: Gateway
  readonly pool: WorkerPool
  /**
   * Runs `fn` while every live worker but `only` is stopped (SIGSTOP): workers share each
   * listening socket, so `only` accepts every connection `fn` makes. `gone`: dead workers.
   */
  steer<T>(only: TestWorker, fn: () => Promise<T>, gone?: readonly TestWorker[]): Promise<T>
}

/** Starts `count` workers on `configFile`; `defer` registers the cleanup (run after the test). */
export async function startWorkerCluster(
  configFile: string, count: number, defer: (cleanup: () => Promise<unknown> | void) => void, options: PoolOptions = {},
): Promise<WorkerCluster> {
  // setupPrimary freezes the scheduling policy: SCHED_NONE (as startPrimary sets it) first, or
  // this process would hand connections round-robin, some of them to a stopped worker.
  // execArgv: none of the test runner's flags; silent: each worker's stderr is its own stream.
  cluster.schedulingPolicy = cluster.SCHED_NONE
  cluster.setupPrimary({ exec: COMPILED_CLI, args: ['start', '--config', configFile], execArgv: [], silent: true })
  const workers: TestWorker[] = []
  const onFork = (w: Worker): void => {
    let text = ''
    w.process.stderr!.on('data', (d: Buffer) => (text += d))
    w.process.stdout!.resume()
    workers.push({ pid: w.process.pid!, stderr: () => text })
  }
  cluster.on('fork', onFork)
  defer(() => { cluster.off('fork', onFork) })
  const { gateway, pool } = await startPrimary(await loadConfigFile(configFile), count, () => {}, options)
  defer(async () => {
    // A failed test may leave one stopped; one that died is restarted under another pid.
    for (const w of workers) {
      try { process.kill(w.pid, 'SIGCONT') } catch { /* gone already */ }
    }
    await pool.stop(0)
    await gateway.close()
  })
  return {
    workers,
    gateway,
    pool,
    async steer(only, fn, gone = []) {
      const others = workers.filter((w) => w !== only && !gone.includes(w))
      for (const w of others) process.kill(w.pid, 'SIGSTOP')
      try {
        return await fn()
      } finally {
        for (const w of others) process.kill(w.pid, 'SIGCONT')
      }
    },
  }
}
