// Command line of `npm run bench -- [options]`.
import { parseArgs } from 'node:util'
import { TARGET_NAMES, type TargetName } from './targets/target.js'
import { onPath } from './which.js'

export const USAGE = `npm run bench -- [options]

  --scenario a,b       run only these scenarios (default: all; see the list below)
  --targets a,b        only these targets: direct, http-proxy, haproxy, gateway (default: all)
  --quick              a smoke run under a minute: 1 s measurements, one warm-up per target
                       process, 1000 idle tunnels
  --duration S         seconds per measurement (default 10; quick 1)
  --warmup S           seconds of warm-up before each measurement (default 2; quick 1, once)
  --connections N      concurrent connections / clients (default 64)
  --loader NAME        wrk | autocannon for HTTP loads (default: wrk when installed)
  --workers N          gateway "workers" and HAProxy nbthread (default: neither set; 1 thread)
  --tunnels N          idle websocket tunnels for ws-idle-10k (default 10000; quick 1000)
  --save-baseline      also write bench/results/baseline.json from this run
  --compare            compare with bench/results/baseline.json; name regressions over 10%
  --micro              run the micro-benchmarks (dist-bench/bench/micro/*.js) instead
  --help`

export interface BenchOptions {
  readonly scenarios: readonly string[] | null
  readonly targets: readonly TargetName[]
  readonly quick: boolean
  readonly seconds: number
  readonly warmupSeconds: number
  readonly connections: number
  readonly loader: 'wrk' | 'autocannon'
  readonly workers: number | null
  readonly tunnels: number
  readonly saveBaseline: boolean
  readonly compare: boolean
  readonly micro: boolean
  readonly help: boolean
}

function positive(name: string, text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback
  const n = Number(text)
  if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name} wants a positive number, got "${text}"`)
  return n
}

function list(text: string | undefined): string[] | null {
  return text === undefined ? null : text.split(',').map((s) => s.trim()).filter(Boolean)
}

export function parseOptions(argv: readonly string[]): BenchOptions {
  const { values } = parseArgs({
    args: [...argv],
    strict: true,
    options: {
      scenario: { type: 'string' },
      targets: { type: 'string' },
      quick: { type: 'boolean', default: false },
      duration: { type: 'string' },
      warmup: { type: 'string' },
      connections: { type: 'string' },
      loader: { type: 'string' },
      workers: { type: 'string' },
      tunnels: { type: 'string' },
      'save-baseline': { type: 'boolean', default: false },
      compare: { type: 'boolean', default: false },
      micro: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  })
  const quick = values.quick === true
  const targets = list(values.targets) ?? [...TARGET_NAMES]
  for (const t of targets) {
    if (!(TARGET_NAMES as readonly string[]).includes(t)) throw new Error(`--targets: unknown target "${t}" (known: ${TARGET_NAMES.join(', ')})`)
  }
  const loader = values.loader ?? (onPath('wrk') ? 'wrk' : 'autocannon')
  if (loader !== 'wrk' && loader !== 'autocannon') throw new Error(`--loader wants wrk or autocannon, got "${loader}"`)
  if (loader === 'wrk' && !onPath('wrk')) throw new Error('--loader wrk: wrk is not on PATH (apt-get install wrk)')
  return {
    scenarios: list(values.scenario),
    targets: targets as TargetName[],
    quick,
    seconds: positive('duration', values.duration, quick ? 1 : 10),
    warmupSeconds: positive('warmup', values.warmup, quick ? 1 : 2),
    connections: Math.round(positive('connections', values.connections, 64)),
    loader,
    workers: values.workers === undefined ? null : Math.round(positive('workers', values.workers, 1)),
    tunnels: Math.round(positive('tunnels', values.tunnels, quick ? 1000 : 10_000)),
    saveBaseline: values['save-baseline'] === true,
    compare: values.compare === true,
    micro: values.micro === true,
    help: values.help === true,
  }
}
