// `--micro`: runs every compiled micro-benchmark (dist-bench/bench/micro/*.js) in its own
// Node process, one after another, with its output passed through. Each file is a plain
// script that prints its own figures.
import { existsSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { spawn } from 'node:child_process'
import { benchDist } from './paths.js'

export async function runMicro(): Promise<number> {
  const dir = join(benchDist, 'micro')
  const files = existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.js')).sort() : []
  if (files.length === 0) {
    process.stdout.write('no micro-benchmarks yet (bench/micro/*.ts)\n')
    return 0
  }
  let failed = 0
  for (const file of files) {
    process.stdout.write(`\n== micro: ${file}\n`)
    const code = await new Promise<number | null>((resolve) => {
      const child = spawn(process.execPath, [join(dir, file)], { stdio: 'inherit' })
      child.once('exit', (c) => resolve(c))
      child.once('error', () => resolve(1))
    })
    if (code !== 0) failed++
  }
  return failed === 0 ? 0 : 1
}
