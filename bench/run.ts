// `npm run bench`: starts the upstream, then for each selected scenario runs every target
// (direct, http-proxy, HAProxy, the gateway) with the same loader, prints a table, and
// writes bench/results/. Every child process is stopped on the way out, however it ends.
import { spawnSync } from 'node:child_process'
import { rmSync } from 'node:fs'
import { mkdtemp } from 'node:fs/promises'
import { cpus, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { makeCertificates } from './certs.js'
import { atExit, installCleanupHandlers, stopAllChildren } from './children.js'
import { formatComparison, readBaseline, regressions, saveBaseline } from './compare.js'
import { fileLimits, maxTunnels, relaunchWithRaisedLimit } from './file-limit.js'
import { autocannonLoader } from './loaders/autocannon.js'
import { socketLoopLoader } from './loaders/socket-loop.js'
import { wrkLoader } from './loaders/wrk.js'
import { runMicro } from './micro.js'
import { parseOptions, USAGE, type BenchOptions } from './options.js'
import { resultsDir } from './paths.js'
import { formatTerminal, ratiosOf, writeRun, type RunRecord, type ScenarioResult } from './report.js'
import { scenarios } from './scenarios/all.js'
import type { Scenario, ScenarioContext } from './scenarios/scenario.js'
import { gatewayTarget } from './targets/gateway.js'
import { TargetPool } from './targets/target-pool.js'
import type { TargetEnv } from './targets/target.js'
import { startUpstream } from './upstream/upstream.js'
import { onPath } from './which.js'

const log = (line: string): void => {
  process.stdout.write(`${line}\n`)
}

function versionOf(command: string, args: string[]): string {
  // wrk -v prints its version and exits 1; nginx -v prints it on stderr.
  const { stdout, stderr } = spawnSync(command, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
  return `${stdout ?? ''}${stderr ?? ''}`.split('\n')[0].trim() || 'not installed'
}

function pickScenarios(options: BenchOptions): Scenario[] {
  if (!options.scenarios) return [...scenarios]
  const unknown = options.scenarios.filter((name) => !scenarios.some((s) => s.name === name))
  if (unknown.length) throw new Error(`unknown scenario(s): ${unknown.join(', ')} (known: ${scenarios.map((s) => s.name).join(', ')})`)
  return scenarios.filter((s) => options.scenarios!.includes(s.name))
}

async function bench(options: BenchOptions): Promise<number> {
  const chosen = pickScenarios(options)
  const limits = fileLimits()
  const startedAt = new Date().toISOString()
  const machine = {
    cpu: `${cpus().length} x ${cpus()[0]?.model ?? 'unknown'}`,
    node: process.version,
    haproxy: onPath('haproxy') ? versionOf('haproxy', ['-v']) : 'not installed',
    wrk: onPath('wrk') ? versionOf('wrk', ['-v']) : 'not installed',
    nginx: onPath('nginx') ? versionOf('nginx', ['-v']) : 'not installed',
    'open files': `soft ${limits.soft}, hard ${limits.hard}`,
    // Other work on the machine skews every row; a high figure here explains odd results.
    'load average at start': loadavg().map((n) => n.toFixed(2)).join(' '),
    gateway: gatewayTarget.unavailable() ?? 'dist/cli.js',
  }
  for (const [k, v] of Object.entries(machine)) log(`${k}: ${v}`)

  const workDir = await mkdtemp(join(tmpdir(), 'gateway-bench-'))
  const removeWorkDir = () => rmSync(workDir, { recursive: true, force: true })
  atExit(removeWorkDir)
  const results: ScenarioResult[] = []
  let pool: TargetPool | null = null
  try {
    const certs = await makeCertificates(workDir)
    const upstream = await startUpstream(workDir, certs, limits.hard)
    const tunnels = maxTunnels(limits)
    const env: TargetEnv = { workDir, certs, upstream, workers: options.workers, nofile: limits.hard, maxConnections: Math.floor((limits.hard - 256) / 2) }
    pool = new TargetPool(env, log)
    const wrk = options.loader === 'wrk' ? wrkLoader(workDir) : null
    const ctx: ScenarioContext = {
      options,
      pool,
      httpLoader: wrk ?? autocannonLoader,
      newConnectionLoader: wrk ?? socketLoopLoader,
      upstreamHttpPort: upstream.httpPort,
      workDir,
      maxTunnels: tunnels,
      log,
      warmupFor: (firstUse) => (!options.quick || firstUse ? options.warmupSeconds : 0),
      selected: (targets) => targets.filter((t) => options.targets.includes(t)),
    }
    for (const scenario of chosen) {
      log(`\n-- ${scenario.name}`)
      const output = await scenario.run(ctx)
      const result: ScenarioResult = { name: scenario.name, title: scenario.title, rows: output.rows, notes: output.notes, ratios: ratiosOf(output), directIsCeiling: output.directIsCeiling ?? true }
      results.push(result)
      log(formatTerminal(result))
    }
  } finally {
    await pool?.stopAll()
    await stopAllChildren()
    removeWorkDir()
  }

  const run: RunRecord = {
    startedAt,
    finishedAt: new Date().toISOString(),
    machine,
    options: {
      scenarios: chosen.map((s) => s.name),
      targets: options.targets,
      quick: options.quick,
      duration: options.seconds,
      warmup: options.warmupSeconds,
      connections: options.connections,
      loader: options.loader,
      workers: options.workers ?? 'default',
      tunnels: options.tunnels,
    },
    scenarios: results,
  }
  const file = await writeRun(resultsDir, run)
  log(`\nresults: ${file}, bench/results/latest.json, bench/results/SUMMARY.md`)
  const baselineFile = join(resultsDir, 'baseline.json')
  if (options.compare) {
    const baseline = await readBaseline(baselineFile)
    log(baseline ? formatComparison(regressions(run, baseline)) : `\ncompare: no baseline yet (${baselineFile}); make one with --save-baseline`)
  }
  if (options.saveBaseline) {
    await saveBaseline(baselineFile, run)
    log(`baseline saved: ${baselineFile}`)
  }
  return 0
}

async function main(): Promise<number> {
  const options = parseOptions(process.argv.slice(2))
  if (options.help) {
    log(`${USAGE}\n\nscenarios:\n${scenarios.map((s) => `  ${s.name.padEnd(18)} ${s.title}`).join('\n')}`)
    return 0
  }
  const relaunched = relaunchWithRaisedLimit(fileLimits())
  if (relaunched) return relaunched
  installCleanupHandlers()
  if (options.micro) return runMicro()
  return bench(options)
}

main().then(
  (code) => {
    process.exitCode = code
  },
  async (err: Error) => {
    process.stderr.write(`bench: ${err.message}\n`)
    await stopAllChildren()
    process.exitCode = 1
  },
)
