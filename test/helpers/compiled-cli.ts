// Where test/global-setup.ts puts the compiled gateway for tests that run the real command.

import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

export const repoRoot = fileURLToPath(new URL('../..', import.meta.url))
/**
 * One folder per test run, named after the run's main process (test/global-setup.ts hands it
 * to the test processes), so two runs in one checkout never delete each other's build.
 */
export const COMPILED_CLI_DIR = process.env.GATEWAY_TEST_BUILD ?? join(repoRoot, `.test-build-${process.pid}`)
export const COMPILED_CLI = join(COMPILED_CLI_DIR, 'cli.js')
