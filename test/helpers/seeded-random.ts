// A seeded PRNG for the fuzz tests: each case's choices follow from the seed alone, so a
// failure printed with its seed replays exactly.

export type Rng = () => number

/** mulberry32: tiny, fast, and good enough to pick mutations. */
export function mulberry32(seed: number): Rng {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** Mixes two integers into one (murmur3's finalizer), for per-case seeds and tags. */
export function mix(a: number, b: number): number {
  let h = (Math.imul(a >>> 0, 0x9e3779b1) ^ Math.imul((b + 0x7f4a7c15) >>> 0, 0x85ebca6b)) >>> 0
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  return (h ^ (h >>> 16)) >>> 0
}

/** An integer in [0, n). */
export const int = (rng: Rng, n: number): number => Math.floor(rng() * n)
/** An integer in [lo, hi]. */
export const range = (rng: Rng, lo: number, hi: number): number => lo + int(rng, hi - lo + 1)
export const pick = <T>(rng: Rng, xs: readonly T[]): T => xs[int(rng, xs.length)]
export const chance = (rng: Rng, p: number): boolean => rng() < p
