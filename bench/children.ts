// Every process the runner starts goes through here, so that every one of them is stopped on
// the way out: normal end, a thrown error, Ctrl-C or SIGTERM. A benchmark that leaves an
// HAProxy or a gateway bound to a port breaks the next run and anyone sharing the machine.
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process'
import { createWriteStream, readFileSync } from 'node:fs'

export interface TrackedChild {
  readonly name: string
  readonly process: ChildProcess
  readonly pid: number
  /** Combined stdout and stderr, written here so a failure can show its tail. */
  readonly logFile: string
  /** Settles when the process has exited (never rejects). */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
}

const running = new Set<TrackedChild>()

export interface SpawnTrackedOptions {
  readonly cwd?: string
  readonly env?: NodeJS.ProcessEnv
  /** Open file limit for the child: raised up to the hard limit by a `sh` wrapper. */
  readonly nofile?: number
  /** Adds an IPC channel so a Node child can exit when the runner vanishes. */
  readonly ipc?: boolean
  /** Called with each stdout line (the log file still gets them). */
  readonly onLine?: (line: string) => void
}

/** How long after a child's exit its stdout may still be read. */
const STDIO_CLOSE_GRACE_MS = 2000

export function spawnTracked(name: string, command: string, args: readonly string[], logFile: string, options: SpawnTrackedOptions = {}): TrackedChild {
  // `ulimit -n` cannot be raised from inside Node; the shell execs the command, so the pid
  // stays the command's own.
  const [file, argv] = options.nofile === undefined
    ? [command, [...args]]
    : ['/bin/sh', ['-c', `ulimit -n ${options.nofile} 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$0" "$@"`, command, ...args]]
  const spawnOptions: SpawnOptions = {
    cwd: options.cwd,
    env: options.env ?? process.env,
    stdio: options.ipc ? ['ignore', 'pipe', 'pipe', 'ipc'] : ['ignore', 'pipe', 'pipe'],
  }
  const child = spawn(file, argv, spawnOptions)
  if (child.pid === undefined) throw new Error(`${name}: could not start ${command}`)
  const log = createWriteStream(logFile)
  let pending = ''
  child.stdout!.on('data', (chunk: Buffer) => {
    log.write(chunk)
    if (!options.onLine) return
    pending += chunk.toString('utf8')
    let nl: number
    while ((nl = pending.indexOf('\n')) !== -1) {
      options.onLine(pending.slice(0, nl))
      pending = pending.slice(nl + 1)
    }
  })
  child.stderr!.on('data', (chunk: Buffer) => log.write(chunk))
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    // 'exit' can come before the last of stdout was read (wrk's summary line was lost that
    // way); 'close' comes after it, unless a grandchild still holds the pipe: then 2 s on.
    child.once('exit', (code, signal) => {
      const done = (): void => {
        clearTimeout(timer)
        running.delete(tracked)
        resolve({ code, signal })
      }
      const timer = setTimeout(done, STDIO_CLOSE_GRACE_MS)
      child.once('close', done)
    })
    child.once('error', () => {
      running.delete(tracked)
      resolve({ code: null, signal: null })
    })
  })
  exited.then(() => log.end(), () => log.end())
  const tracked: TrackedChild = { name, process: child, pid: child.pid, logFile, exited }
  running.add(tracked)
  return tracked
}

/** The last lines a child wrote, for error messages. */
export function logTail(child: TrackedChild, lines = 12): string {
  try {
    return readFileSync(child.logFile, 'utf8').trimEnd().split('\n').slice(-lines).join('\n')
  } catch {
    return ''
  }
}

/** SIGTERM, then SIGKILL after `graceMs` if it is still there. */
export async function stopChild(child: TrackedChild, graceMs = 3000): Promise<void> {
  if (child.process.exitCode !== null || child.process.signalCode !== null) return
  child.process.kill('SIGTERM')
  const timer = setTimeout(() => child.process.kill('SIGKILL'), graceMs)
  await child.exited
  clearTimeout(timer)
}

export async function stopAllChildren(): Promise<void> {
  await Promise.all([...running].map((child) => stopChild(child)))
}

const exitHooks: (() => void)[] = []

/** Synchronous clean-up (temporary files) that must happen however the process ends. */
export function atExit(hook: () => void): void {
  exitHooks.push(hook)
}

/** Last resort on `exit`, where nothing asynchronous runs any more. */
function killAllNow(): void {
  for (const child of running) child.process.kill('SIGKILL')
  for (const hook of exitHooks.splice(0)) {
    try {
      hook()
    } catch {
      // Best effort: the process is ending either way.
    }
  }
}

let installed = false

/**
 * Stops every child on Ctrl-C, SIGTERM, an uncaught error and exit; `onSignal` runs first
 * (e.g. to stop in-process loads) and the process then exits with 130/143/1.
 */
export function installCleanupHandlers(): void {
  if (installed) return
  installed = true
  const bail = (code: number, reason: string) => {
    process.stderr.write(`\n${reason}: stopping child processes\n`)
    const force = setTimeout(() => {
      killAllNow()
      process.exit(code)
    }, 4000)
    force.unref()
    stopAllChildren().finally(() => process.exit(code))
  }
  process.once('SIGINT', () => bail(130, 'interrupted'))
  process.once('SIGTERM', () => bail(143, 'terminated'))
  process.once('uncaughtException', (err) => {
    process.stderr.write(`${err.stack ?? String(err)}\n`)
    bail(1, 'uncaught error')
  })
  process.once('unhandledRejection', (err) => {
    process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`)
    bail(1, 'unhandled rejection')
  })
  process.once('exit', killAllNow)
}
