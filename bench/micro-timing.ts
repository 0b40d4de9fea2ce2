// Timing for the micro-benchmarks: run a function in batches until a time budget is spent,
// report the median nanoseconds per call over the batches (a median resists the noise of a
// shared machine better than a mean).

export function nsPerOp(fn: (i: number) => unknown, budgetMs = 400, batch = 10_000): number {
  for (let i = 0; i < batch; i++) fn(i) // warm-up: let the JIT settle
  const samples: number[] = []
  const end = performance.now() + budgetMs
  let sink = 0
  while (performance.now() < end || samples.length < 5) {
    const t0 = process.hrtime.bigint()
    for (let i = 0; i < batch; i++) if (fn(i) === undefined) sink++
    samples.push(Number(process.hrtime.bigint() - t0) / batch)
  }
  if (sink === -1) process.stdout.write('') // keep `sink` alive
  samples.sort((a, b) => a - b)
  return samples[Math.floor(samples.length / 2)]
}

export function row(label: string, ns: number, extra = ''): string {
  return `${label.padEnd(44)} ${ns.toFixed(1).padStart(9)} ns/op${extra === '' ? '' : `  ${extra}`}`
}

/** A forced full GC (for heap figures), available without starting node with --expose-gc. */
export async function collect(): Promise<void> {
  const v8 = await import('node:v8')
  const vm = await import('node:vm')
  v8.setFlagsFromString('--expose-gc')
  const gc = vm.runInNewContext('gc') as () => void
  gc()
  gc()
}
