// `--save-baseline` and `--compare`: a run against bench/results/baseline.json. A row is a
// regression when it is more than 10% worse (slower, or more bytes per tunnel) than the
// baseline's row for the same scenario, target and variant.
import { existsSync } from 'node:fs'
import { readFile, writeFile } from 'node:fs/promises'
import type { RunRecord } from './report.js'

const THRESHOLD = 0.1

export interface Regression {
  readonly scenario: string
  readonly row: string
  readonly unit: string
  readonly baseline: number
  readonly current: number
  /** Signed change, e.g. -0.18 for 18% fewer req/s. */
  readonly change: number
}

export function regressions(current: RunRecord, baseline: RunRecord): Regression[] {
  const out: Regression[] = []
  for (const scenario of current.scenarios) {
    const before = baseline.scenarios.find((s) => s.name === scenario.name)
    if (!before) continue
    for (const row of scenario.rows) {
      const now = row.measurement
      const then = before.rows.find((r) => r.target === row.target && r.variant === row.variant)?.measurement
      if (!now || !then || then.value <= 0 || now.unit !== then.unit) continue
      const change = now.value / then.value - 1
      const worse = now.higherIsBetter ? change < -THRESHOLD : change > THRESHOLD
      if (worse) {
        out.push({ scenario: scenario.name, row: row.variant ? `${row.target} (${row.variant})` : row.target, unit: now.unit, baseline: then.value, current: now.value, change })
      }
    }
  }
  return out
}

export function formatComparison(found: readonly Regression[]): string {
  if (found.length === 0) return '\ncompare: no row more than 10% worse than the baseline'
  const names = [...new Set(found.map((r) => r.scenario))]
  const lines = [`\ncompare: ${names.length} scenario(s) more than 10% worse than the baseline: ${names.join(', ')}`]
  for (const r of found) {
    lines.push(`  ${r.scenario} ${r.row}: ${Math.round(r.baseline).toLocaleString('en-US')} -> ${Math.round(r.current).toLocaleString('en-US')} ${r.unit} (${(r.change * 100).toFixed(1)}%)`)
  }
  return lines.join('\n')
}

export async function readBaseline(file: string): Promise<RunRecord | null> {
  if (!existsSync(file)) return null
  return JSON.parse(await readFile(file, 'utf8')) as RunRecord
}

export async function saveBaseline(file: string, run: RunRecord): Promise<void> {
  await writeFile(file, JSON.stringify(run, null, 2) + '\n')
}
