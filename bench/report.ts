// Turns results into what people read: a table per scenario on the terminal, the run as JSON
// (bench/results/<timestamp>.json and latest.json) and bench/results/SUMMARY.md.
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Measurement } from './loaders/measurement.js'
import type { ResultRow, RatioSpec, ScenarioOutput } from './scenarios/scenario.js'
import type { TargetName } from './targets/target.js'

export interface Ratio {
  readonly label: string
  readonly value: number
  readonly higherIsBetter: boolean
}

export interface ScenarioResult {
  readonly name: string
  readonly title: string
  readonly rows: readonly ResultRow[]
  readonly notes: readonly string[]
  readonly ratios: readonly Ratio[]
  readonly directIsCeiling: boolean
}

export interface RunRecord {
  readonly startedAt: string
  readonly finishedAt: string
  readonly machine: Readonly<Record<string, string | number>>
  readonly options: Readonly<Record<string, unknown>>
  readonly scenarios: readonly ScenarioResult[]
}

const REFERENCES: readonly TargetName[] = ['haproxy', 'http-proxy', 'direct']
/** A row within this fraction of the direct row was held back by the loader/upstream. */
const LOADER_BOUND = 0.9

function find(rows: readonly ResultRow[], target: TargetName, variant: string): Measurement | null {
  return rows.find((r) => r.target === target && r.variant === variant)?.measurement ?? null
}

/** gateway/<reference> for every variant both measured, plus the scenario's own ratios. */
export function ratiosOf(output: ScenarioOutput): Ratio[] {
  const ratios: Ratio[] = []
  const variants = [...new Set(output.rows.map((r) => r.variant))]
  for (const variant of variants) {
    const gateway = find(output.rows, 'gateway', variant)
    if (!gateway) continue
    for (const ref of REFERENCES) {
      const m = find(output.rows, ref, variant)
      if (m && m.value > 0) ratios.push({ label: `gateway/${ref}${variant ? ` (${variant})` : ''}`, value: gateway.value / m.value, higherIsBetter: gateway.higherIsBetter })
    }
  }
  for (const spec of output.ratios ?? ([] as RatioSpec[])) {
    const a = find(output.rows, spec.numerator.target, spec.numerator.variant)
    const b = find(output.rows, spec.denominator.target, spec.denominator.variant)
    if (a && b && b.value > 0) ratios.push({ label: spec.label, value: a.value / b.value, higherIsBetter: a.higherIsBetter })
  }
  return ratios
}

function rowNote(row: ResultRow, result: ScenarioResult): string {
  if (!row.measurement) return `skipped: ${(row.skipped ?? '').split('\n')[0]}`
  const m = row.measurement
  const notes: string[] = []
  const ceiling = row.target === 'direct' || !result.directIsCeiling ? null : find(result.rows, 'direct', row.variant)
  if (ceiling && m.higherIsBetter && m.value >= LOADER_BOUND * ceiling.value) notes.push('loader-bound (>=90% of direct)')
  if (m.extra && 'rssBeforeMB' in m.extra) notes.push(`RSS ${m.extra.rssBeforeMB} -> ${m.extra.rssAfterMB} MB, ${m.extra.tunnels} tunnels`)
  return notes.join('; ')
}

const int = (n: number): string => Math.round(n).toLocaleString('en-US')
const ms = (n: number | null): string => (n === null ? '-' : n < 10 ? n.toFixed(2) : n.toFixed(1))

interface Table {
  readonly head: readonly string[]
  readonly body: readonly (readonly string[])[]
}

function tableOf(result: ScenarioResult): Table {
  const unit = result.rows.find((r) => r.measurement)?.measurement?.unit ?? 'rate'
  const withVariant = result.rows.some((r) => r.variant)
  const head = ['target', ...(withVariant ? ['variant'] : []), unit, 'p50 ms', 'p99 ms', 'errors', 'non-2xx', 'note']
  const body = result.rows.map((row) => {
    const m = row.measurement
    return [
      row.target,
      ...(withVariant ? [row.variant] : []),
      m ? int(m.value) : '-',
      m ? ms(m.p50Ms) : '-',
      m ? ms(m.p99Ms) : '-',
      m ? int(m.errors) : '-',
      m ? int(m.non2xx) : '-',
      rowNote(row, result),
    ]
  })
  return { head, body }
}

function ratioLine(ratios: readonly Ratio[]): string {
  return ratios.map((r) => `${r.label} ${r.value.toFixed(2)}${r.higherIsBetter ? '' : ' (lower is better)'}`).join(', ')
}

export function formatTerminal(result: ScenarioResult): string {
  const { head, body } = tableOf(result)
  const numericFrom = head.length - 6 // unit, p50, p99, errors, non-2xx are right-aligned
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((r) => r[i].length)))
  const line = (cells: readonly string[]) => cells.map((c, i) => {
    const last = i === cells.length - 1
    if (last) return c
    return i >= numericFrom && i < head.length - 1 ? c.padStart(widths[i]) : c.padEnd(widths[i])
  }).join('  ').trimEnd()
  const out = [`\n== ${result.name}: ${result.title}`, line(head), line(head.map((_, i) => '-'.repeat(widths[i]))), ...body.map(line)]
  if (result.ratios.length) out.push(`ratios: ${ratioLine(result.ratios)}`)
  for (const note of result.notes) out.push(`note: ${note}`)
  return out.join('\n')
}

function markdownTable(result: ScenarioResult): string {
  const { head, body } = tableOf(result)
  const numericFrom = head.length - 6
  const align = head.map((_, i) => (i >= numericFrom && i < head.length - 1 ? '---:' : '---'))
  const row = (cells: readonly string[]) => `| ${cells.map((c) => c.replace(/\|/g, '\\|')).join(' | ')} |`
  return [row(head), row(align), ...body.map(row)].join('\n')
}

export function formatSummary(run: RunRecord): string {
  const out = [
    '# Benchmark summary',
    '',
    'Made by `npm run bench` (bench/run.ts); the raw figures are in bench/results/latest.json.',
    'Every target forwards to the same Node upstream (nginx in get-fast-upstream and access-log) on the same machine,',
    'loaded by the same loader, so the rows compare with each other, not with other machines.',
    '"direct" is the upstream alone:',
    'the ceiling of loader plus upstream; a row near it was held back by them, not by the proxy.',
    ...(run.options.quick ? ['', '**Quick run** (`--quick`): 1-second measurements, a smoke test; the figures are rough.'] : []),
    '',
    `- run: ${run.startedAt} to ${run.finishedAt}`,
    ...Object.entries(run.machine).map(([k, v]) => `- ${k}: ${v}`),
    `- options: ${Object.entries(run.options).map(([k, v]) => `${k}=${Array.isArray(v) ? v.join(',') : String(v)}`).join(', ')}`,
  ]
  for (const result of run.scenarios) {
    out.push('', `## ${result.name}`, '', result.title, '', markdownTable(result))
    if (result.ratios.length) out.push('', `Ratios: ${ratioLine(result.ratios)}.`)
    for (const note of result.notes) out.push('', `Note: ${note}.`)
  }
  return out.join('\n') + '\n'
}

export async function writeRun(dir: string, run: RunRecord): Promise<string> {
  await mkdir(dir, { recursive: true })
  const stamp = run.startedAt.replace(/[:.]/g, '-')
  const json = JSON.stringify(run, null, 2) + '\n'
  const file = join(dir, `${stamp}.json`)
  await writeFile(file, json)
  await writeFile(join(dir, 'latest.json'), json)
  await writeFile(join(dir, 'SUMMARY.md'), formatSummary(run))
  return file
}
