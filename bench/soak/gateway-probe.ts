// What the soak watches in the gateway process: open descriptors (/proc/PID/fd), resident
// memory (/proc/PID/status), and the V8 heap from the admin /metrics when the gateway
// reports it; plus the admin /stats counts of open connections and tunnels when available.
import { readdirSync, readFileSync } from 'node:fs'
import { request } from 'node:http'
import { setTimeout as sleep } from 'node:timers/promises'
import { treeRssBytes } from '../process-rss.js'

export interface ProcessFigures {
  readonly fds: number
  readonly rssBytes: number
  /** RssAnon and RssFile from /proc/PID/status: the process's own memory vs mapped files (code). */
  readonly rssAnonBytes: number
  readonly rssFileBytes: number
  /** nodejs_heap_used_bytes from /metrics; null when the gateway does not report it. */
  readonly heapUsedBytes: number | null
  /** nodejs_heap_total_bytes (V8 heap reserved) and nodejs_external_memory_bytes (buffers). */
  readonly heapTotalBytes: number | null
  readonly externalBytes: number | null
  /** From /stats; null when not reported. */
  readonly openConnections: number | null
  readonly openTunnels: number | null
}

function statusField(pid: number, field: string): number {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m ? Number(m[1]) * 1024 : 0
  } catch {
    return 0
  }
}

export function openDescriptors(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/fd`).length
  } catch {
    return -1
  }
}

function adminGet(url: string, token: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve) => {
    const req = request(url, { headers: { authorization: `Bearer ${token}` }, timeout: 3000, agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => (body += d))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
      res.on('error', () => resolve({ status: 0, body: '' }))
    })
    req.once('timeout', () => req.destroy())
    req.once('error', () => resolve({ status: 0, body: '' }))
    req.end()
  })
}

export class GatewayProbe {
  constructor(readonly pid: number, private readonly adminUrl: string, private readonly token: string) {}

  async figures(): Promise<ProcessFigures> {
    const [metrics, stats] = await Promise.all([adminGet(`${this.adminUrl}/metrics`, this.token), adminGet(`${this.adminUrl}/stats`, this.token)])
    const gauge = (name: string): number | null => {
      const m = metrics.status === 200 ? new RegExp(`^${name} (\\d+(?:\\.\\d+)?(?:e\\+?\\d+)?)$`, 'm').exec(metrics.body) : null
      return m ? Number(m[1]) : null
    }
    let conns: number | null = null
    let tunnels: number | null = null
    if (stats.status === 200) {
      try {
        const s = JSON.parse(stats.body) as { connections?: { open?: number }; tunnels?: { open?: number } }
        conns = typeof s.connections?.open === 'number' ? s.connections.open : null
        tunnels = typeof s.tunnels?.open === 'number' ? s.tunnels.open : null
      } catch {
        // not JSON: leave the counts unknown
      }
    }
    // Read after the admin calls, whose own connections are closed by then.
    await sleep(100)
    return {
      fds: openDescriptors(this.pid),
      rssBytes: treeRssBytes(this.pid),
      rssAnonBytes: statusField(this.pid, 'RssAnon'),
      rssFileBytes: statusField(this.pid, 'RssFile'),
      heapUsedBytes: gauge('nodejs_heap_used_bytes'),
      heapTotalBytes: gauge('nodejs_heap_total_bytes'),
      externalBytes: gauge('nodejs_external_memory_bytes'),
      openConnections: conns,
      openTunnels: tunnels,
    }
  }

  /**
   * Waits until the gateway is quiet: no client connection or tunnel open (when /stats says),
   * and the descriptor count unchanged for `stableMs` (pooled upstream connections idle out
   * after timeouts.upstreamIdleMs, lingering closes after a few seconds). Gives up after
   * `deadlineMs` and returns what it sees then.
   */
  async settle(stableMs: number, deadlineMs: number): Promise<ProcessFigures> {
    const deadline = Date.now() + deadlineMs
    let last = -2
    let since = Date.now()
    for (;;) {
      const f = await this.figures()
      const quiet = (f.openConnections ?? 0) === 0 && (f.openTunnels ?? 0) === 0
      if (f.fds !== last || !quiet) {
        last = f.fds
        since = Date.now()
      } else if (Date.now() - since >= stableMs) {
        return f
      }
      if (Date.now() > deadline) return f
      await sleep(250)
    }
  }
}
