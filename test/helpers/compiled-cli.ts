// Where test/global-setup.ts puts the compiled gateway for tests that run the real command.

import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

export const repoRoot = fileURLToPath(new URL('../..', import.meta.url))
export const COMPILED_CLI_DIR = join(repoRoot, '.test-build')
export const COMPILED_CLI = join(COMPILED_CLI_DIR, 'cli.js')
