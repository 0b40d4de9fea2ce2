// Compiles src/ once for the tests that run the real `gateway` command (signals, workers),
// into a folder of this run's own under the repository root like dist/, so the embedded
// config is found the same way. Removed after the run.

import { execFile } from 'node:child_process'
import { rm } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { COMPILED_CLI_DIR, repoRoot } from './helpers/compiled-cli.js'

export async function setup(): Promise<void> {
  process.env.GATEWAY_TEST_BUILD = COMPILED_CLI_DIR
  await rm(COMPILED_CLI_DIR, { recursive: true, force: true })
  await promisify(execFile)(process.execPath, [
    join(repoRoot, 'node_modules/typescript/bin/tsc'), '-p', join(repoRoot, 'tsconfig.json'), '--outDir', COMPILED_CLI_DIR, '--sourceMap', 'false',
  ], { cwd: repoRoot })
}

export async function teardown(): Promise<void> {
  await rm(COMPILED_CLI_DIR, { recursive: true, force: true })
}
