// What a scenario is and what it gets to work with.
import type { HttpLoader, Measurement } from '../loaders/measurement.js'
import type { BenchOptions } from '../options.js'
import type { TargetPool } from '../targets/target-pool.js'
import type { TargetName } from '../targets/target.js'

export interface ResultRow {
  readonly target: TargetName
  /** Distinguishes rows of one target ("ecdsa", "100k routes"); "" when there is one. */
  readonly variant: string
  readonly measurement: Measurement | null
  /** Why there is no measurement (target unavailable, failed to start, load failed). */
  readonly skipped?: string
}

/** A ratio a scenario asks for besides the gateway-to-reference ones, e.g. 100k/10 routes. */
export interface RatioSpec {
  readonly label: string
  readonly numerator: { readonly target: TargetName; readonly variant: string }
  readonly denominator: { readonly target: TargetName; readonly variant: string }
}

export interface ScenarioOutput {
  readonly rows: readonly ResultRow[]
  /** Facts a reader needs for the numbers: loader, counts, caps, why rows are missing. */
  readonly notes: readonly string[]
  readonly ratios?: readonly RatioSpec[]
  /**
   * False when "direct" does the same work as the proxies rather than less (handshakes: the
   * upstream's own TLS server), so being near it says nothing about the loader.
   */
  readonly directIsCeiling?: boolean
}

export interface ScenarioContext {
  readonly options: BenchOptions
  readonly pool: TargetPool
  /** For keep-alive HTTP loads: wrk or autocannon (`--loader`). */
  readonly httpLoader: HttpLoader
  /** For a connection per request: wrk, or the socket loop when wrk is not the loader. */
  readonly newConnectionLoader: HttpLoader
  /** The shared upstream's plain HTTP port (for registry entries). */
  readonly upstreamHttpPort: number
  /** The run's temporary folder, for what a scenario starts itself (get-fast-upstream's nginx). */
  readonly workDir: string
  /** Most idle tunnels the open file limits allow. */
  readonly maxTunnels: number
  readonly log: (line: string) => void
  /** Warm-up seconds for a target: 0 in quick mode once a target process has been used. */
  warmupFor(firstUse: boolean): number
  /** The scenario's targets that --targets kept. */
  selected(targets: readonly TargetName[]): TargetName[]
}

export interface Scenario {
  readonly name: string
  /** One line for the table heading and SUMMARY.md. */
  readonly title: string
  run(ctx: ScenarioContext): Promise<ScenarioOutput>
}
