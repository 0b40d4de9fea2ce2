// Runs a `gateway` command in-process with captured output (no process exit).

import { runCli, type CliIo } from '../../src/cli.js'

export interface Captured { code: number; out: string[]; err: string[] }

export async function runCaptured(argv: string[], cwd: string, env: NodeJS.ProcessEnv = {}): Promise<Captured> {
  const out: string[] = []
  const err: string[] = []
  const io: CliIo = {
    out: (line) => out.push(line),
    err: (line) => err.push(line),
    env,
    cwd,
    exit: (code) => { throw new Error(`exit(${code}) called`) },
  }
  const code = await runCli(argv, io)
  return { code, out, err }
}
