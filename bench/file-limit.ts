// Open file limits. `ws-idle-10k` holds every tunnel twice in the proxy (client side and
// upstream side) and once in the runner; Node cannot change its own limit, so children are
// spawned through `ulimit -n` (children.ts) and the tunnel count is capped to what fits.
import { execFileSync, spawn } from 'node:child_process'

function shell(command: string): number {
  const out = execFileSync('/bin/sh', ['-c', command], { encoding: 'utf8' }).trim()
  return out === 'unlimited' ? 1_048_576 : Number(out)
}

export interface FileLimits {
  /** This process's soft limit (inherited from the shell that started it). */
  readonly soft: number
  /** The hard limit: what children can be raised to. */
  readonly hard: number
}

export function fileLimits(): FileLimits {
  return { soft: shell('ulimit -n'), hard: shell('ulimit -Hn') }
}

/** Room kept for listeners, logs, pools and the runtime itself. */
const RESERVE = 512

/**
 * How many tunnels fit: the proxy needs two descriptors per tunnel (within the children's
 * hard limit), the runner one per client (within its own soft limit).
 */
export function maxTunnels(limits: FileLimits): number {
  return Math.max(0, Math.min(Math.floor((limits.hard - RESERVE) / 2), limits.soft - RESERVE))
}

const RAISED = 'BENCH_NOFILE_RAISED'

/**
 * When this process's soft limit is below the hard one, runs the same command again under
 * `ulimit -n <hard>` and resolves to its exit code; null when there is nothing to raise (or
 * this already is the relaunched process). Ctrl-C reaches both: they share a process group.
 */
export function relaunchWithRaisedLimit(limits: FileLimits): Promise<number> | null {
  if (limits.soft >= limits.hard || process.env[RAISED]) return null
  const child = spawn('/bin/sh', ['-c', `ulimit -n ${limits.hard} && exec "$0" "$@"`, process.execPath, ...process.execArgv, ...process.argv.slice(1)], {
    stdio: 'inherit',
    env: { ...process.env, [RAISED]: '1' },
  })
  process.on('SIGTERM', () => child.kill('SIGTERM'))
  process.on('SIGINT', () => {}) // the child gets it too and cleans up; wait for it
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve(code ?? (signal ? 128 + 2 : 1))))
}
