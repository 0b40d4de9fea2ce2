// Where things are, resolved from this file's compiled location (dist-bench/bench/paths.js),
// so the runner works whatever the current directory is.
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))

/** The repository root (the folder holding package.json). */
export const repoRoot = resolve(here, '..', '..')
/** The compiled bench folder (dist-bench/bench), where child entry points live. */
export const benchDist = here
/** The gateway's CLI, built by `npm run build`. */
export const gatewayCli = join(repoRoot, 'dist', 'cli.js')
/** Committed results folder (JSON files are git-ignored, SUMMARY.md is not). */
export const resultsDir = join(repoRoot, 'bench', 'results')
