// The middle of a set of figures: what the bench quotes when a scenario runs in rounds, as it
// resists the bursts of a shared host better than a mean.

export function median(values: readonly number[]): number {
  const s = [...values].sort((a, b) => a - b)
  const mid = s.length >> 1
  return s.length % 2 === 1 ? s[mid] : (s[mid - 1] + s[mid]) / 2
}
