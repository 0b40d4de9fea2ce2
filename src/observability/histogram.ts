// A fixed-bucket latency histogram: recording is a short scan and two additions, no
// allocation; quantiles are estimated by linear interpolation inside the bucket (Prometheus'
// histogram_quantile does the same), so p50/p99 are as exact as the bucket bounds.

/** Upper bounds in seconds: 0.5 ms .. 60 s, roughly 1-2-5 per decade. */
export const LATENCY_BUCKETS_SECONDS: readonly number[] = Object.freeze([
  0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60,
])

export class Histogram {
  /** Per bucket (not cumulative); the last slot is +Inf. */
  readonly counts: Float64Array
  sum = 0
  count = 0

  constructor(readonly bounds: readonly number[] = LATENCY_BUCKETS_SECONDS) {
    this.counts = new Float64Array(bounds.length + 1)
  }

  observe(value: number): void {
    const bounds = this.bounds
    let i = 0
    while (i < bounds.length && value > bounds[i]) i++
    this.counts[i]++
    this.sum += value
    this.count++
  }

  /** Estimated q-quantile (0 < q <= 1); null before the first value. */
  quantile(q: number): number | null {
    if (this.count === 0) return null
    const rank = q * this.count
    let seen = 0
    for (let i = 0; i < this.counts.length; i++) {
      const n = this.counts[i]
      if (n === 0 || seen + n < rank) {
        seen += n
        continue
      }
      // the +Inf bucket has no upper bound: report its lower one
      if (i === this.bounds.length) return this.bounds[i - 1]
      const lower = i === 0 ? 0 : this.bounds[i - 1]
      return lower + (this.bounds[i] - lower) * ((rank - seen) / n)
    }
    return this.bounds[this.bounds.length - 1]
  }
}
