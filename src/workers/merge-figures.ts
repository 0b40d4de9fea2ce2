// Adding up the figures of several worker processes, so the admin API answers once for all
// of them. Counters, gauges of things held (connections, tunnels, pool sizes) and histogram
// buckets add up; figures that describe one process or a latency do not, and take the
// largest value instead (the slowest worker's p99 is the honest cluster p99 bound).

/** Series whose values must not be summed across processes. */
function takesMax(name: string): boolean {
  return /(_seconds$|_p50|_p99|uptime|_lag_|quantile|_start_time|_info$|_ratio$|_connected$|_version$)/.test(name) && !/_bucket$|_sum$|_count$|_total$/.test(name)
}

/** Prometheus text exposition: samples with equal name and labels are added up. */
export function mergePrometheus(texts: readonly string[]): string {
  const comments: string[] = []
  const seenComments = new Set<string>()
  const order: string[] = []
  const values = new Map<string, number>()
  for (const text of texts) {
    for (const line of text.split('\n')) {
      if (line === '') continue
      if (line.startsWith('#')) {
        if (!seenComments.has(line)) {
          seenComments.add(line)
          comments.push(line)
          order.push(line)
        }
        continue
      }
      const space = line.lastIndexOf(' ')
      const series = line.slice(0, space)
      const value = Number(line.slice(space + 1))
      const name = series.split('{', 1)[0]
      const prev = values.get(series)
      if (prev === undefined) {
        order.push(series)
        values.set(series, value)
      } else {
        values.set(series, takesMax(name) ? Math.max(prev, value) : prev + value)
      }
    }
  }
  return order.map((entry) => entry.startsWith('#') ? entry : `${entry} ${formatNumber(values.get(entry)!)}`).join('\n') + '\n'
}

function formatNumber(n: number): string {
  return Number.isInteger(n) ? String(n) : String(Number(n.toPrecision(12)))
}

/** /stats objects: numbers add up (latency figures take the largest), objects merge by key. */
export function mergeStats(objects: readonly Record<string, unknown>[]): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const obj of objects) mergeInto(out, obj)
  return out
}

function mergeInto(target: Record<string, unknown>, source: Record<string, unknown>): void {
  for (const [key, value] of Object.entries(source)) {
    const prev = target[key]
    if (typeof value === 'number') {
      if (typeof prev !== 'number') target[key] = value
      else target[key] = /p50|p99|Ms$|lag|ratio|uptime|version/i.test(key) ? Math.max(prev, value) : prev + value
    } else if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
      const into = prev !== null && typeof prev === 'object' && !Array.isArray(prev) ? prev as Record<string, unknown> : {}
      mergeInto(into, value as Record<string, unknown>)
      target[key] = into
    } else if (prev === undefined) {
      target[key] = value
    }
  }
}
