// Memory held per idle websocket tunnel: a fresh proxy process, its RSS (the whole process
// tree, /proc/PID/status VmRSS) before and after opening the tunnels, divided by the count.
// Idle tunnels are the platform's normal state (agents send no pings; IDE tabs stay open for
// hours), so this is what sizes a gateway's memory. "direct" has no proxy process: no row.
import { setTimeout as sleep } from 'node:timers/promises'
import type { Measurement } from '../loaders/measurement.js'
import { openTunnels } from '../loaders/ws-tunnels.js'
import { treeRssBytes } from '../process-rss.js'
import { DEFAULT_SPEC, type TargetName } from '../targets/target.js'
import { describe, indent } from './measure-targets.js'
import type { ResultRow, Scenario, ScenarioContext, ScenarioOutput } from './scenario.js'

const PROXIES: readonly TargetName[] = ['http-proxy', 'haproxy', 'gateway']
const OPEN_CONCURRENCY = 100
const WARM_TUNNELS = 100
/** Lets lazily grown buffers and the allocator settle before reading RSS. */
const SETTLE_MS = 1000
const QUICK_SETTLE_MS = 500

const MB = 1024 * 1024

async function measureIdle(url: string, pid: number, count: number, settleMs: number): Promise<Measurement> {
  // Warm the upgrade path (code compiled, pools made) so "before" is a running proxy's
  // baseline rather than a cold one's.
  const warm = await openTunnels(url, WARM_TUNNELS, OPEN_CONCURRENCY)
  await warm.close()
  await sleep(settleMs)
  const before = treeRssBytes(pid)
  const tunnels = await openTunnels(url, count, OPEN_CONCURRENCY)
  try {
    await sleep(settleMs)
    const after = treeRssBytes(pid)
    const echoed = await tunnels.verify(10_000)
    return {
      unit: 'B/tunnel',
      value: tunnels.opened > 0 ? (after - before) / tunnels.opened : 0,
      higherIsBetter: false,
      p50Ms: null,
      p99Ms: null,
      errors: tunnels.failed + (tunnels.opened - echoed),
      non2xx: 0,
      total: tunnels.opened,
      seconds: tunnels.seconds,
      loader: 'node-ws',
      extra: {
        tunnels: tunnels.opened,
        rssBeforeMB: Number((before / MB).toFixed(1)),
        rssAfterMB: Number((after / MB).toFixed(1)),
        opensPerSecond: Math.round(tunnels.opened / tunnels.seconds),
        echoed,
      },
    }
  } finally {
    await tunnels.close()
  }
}

export const wsIdle: Scenario = {
  name: 'ws-idle-10k',
  title: 'idle websocket tunnels: proxy RSS before/after, bytes per tunnel (lower is better)',
  async run(ctx: ScenarioContext): Promise<ScenarioOutput> {
    const count = Math.min(ctx.options.tunnels, ctx.maxTunnels)
    const notes = [`${count.toLocaleString('en-US')} tunnels opened ${OPEN_CONCURRENCY} at a time; each verified with one echo; errors = failed opens + missing echoes`]
    if (count < ctx.options.tunnels) {
      notes.push(`capped from ${ctx.options.tunnels} by the open file limit (ulimit -n: the proxy holds 2 sockets per tunnel); raise the hard limit to run them all`)
    }
    const rows: ResultRow[] = []
    for (const name of ctx.selected(PROXIES)) {
      const acquired = await ctx.pool.acquire(name, { ...DEFAULT_SPEC, fresh: true })
      if (!acquired.ok) {
        ctx.log(`  ${name}: skipped: ${indent(acquired.reason)}`)
        rows.push({ target: name, variant: '', measurement: null, skipped: acquired.reason })
        continue
      }
      try {
        const m = await measureIdle(`${acquired.target.httpUrl.replace('http:', 'ws:')}/idle`, acquired.target.pid!, count, ctx.options.quick ? QUICK_SETTLE_MS : SETTLE_MS)
        ctx.log(`  ${name}: ${describe(m)} (RSS ${m.extra?.rssBeforeMB} -> ${m.extra?.rssAfterMB} MB)`)
        rows.push({ target: name, variant: '', measurement: m })
      } catch (err) {
        const reason = `failed: ${(err as Error).message}`
        ctx.log(`  ${name}: ${indent(reason)}`)
        rows.push({ target: name, variant: '', measurement: null, skipped: reason })
      }
    }
    return { rows, notes }
  },
}
