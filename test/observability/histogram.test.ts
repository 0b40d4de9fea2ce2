import { describe, expect, it } from 'vitest'
import { Histogram } from '../../src/observability/histogram.js'

describe('Histogram', () => {
  it('has no quantiles before the first value', () => {
    expect(new Histogram().quantile(0.5)).toBeNull()
  })

  it('estimates p50 and p99 within the bucket that holds them', () => {
    const h = new Histogram([0.001, 0.01, 0.1, 1])
    for (let i = 0; i < 98; i++) h.observe(0.005)
    h.observe(0.5)
    h.observe(0.5)
    const p50 = h.quantile(0.5)!
    expect(p50).toBeGreaterThan(0.001)
    expect(p50).toBeLessThanOrEqual(0.01)
    const p99 = h.quantile(0.99)!
    expect(p99).toBeGreaterThan(0.1)
    expect(p99).toBeLessThanOrEqual(1)
    expect(h.count).toBe(100)
    expect(h.sum).toBeCloseTo(98 * 0.005 + 1, 6)
  })

  it('counts a value equal to a bound in that bound\'s bucket (Prometheus le)', () => {
    const h = new Histogram([0.1, 1])
    h.observe(0.1)
    h.observe(5)
    expect([...h.counts]).toEqual([1, 0, 1])
    expect(h.quantile(1)).toBe(1)
  })
})
