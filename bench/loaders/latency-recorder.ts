// Latency samples for the loaders written here (socket loop, TLS, websockets). Keeps every
// sample: a run is at most a few hundred thousand operations, and exact percentiles beat a
// histogram's buckets at this size.

export class LatencyRecorder {
  private samples = new Float64Array(65_536)
  private count = 0

  add(ms: number): void {
    if (this.count === this.samples.length) {
      const bigger = new Float64Array(this.samples.length * 2)
      bigger.set(this.samples)
      this.samples = bigger
    }
    this.samples[this.count++] = ms
  }

  get size(): number {
    return this.count
  }

  /** Nearest-rank percentile in ms, null without samples. */
  percentile(p: number): number | null {
    if (this.count === 0) return null
    const sorted = this.samples.slice(0, this.count).sort()
    const rank = Math.min(this.count - 1, Math.max(0, Math.ceil((p / 100) * this.count) - 1))
    return sorted[rank]
  }
}
