// What every fault-injection scenario must show besides its own outcome (issue 6, item 4):
// the process survives, a well-behaved request stream to a healthy route keeps succeeding
// while the fault happens, and nothing leaks (the gateway forgets every connection, tunnel
// and in-use upstream slot, and the process's open descriptors return to where they were).

import { readdirSync, readlinkSync } from 'node:fs'
import http from 'node:http'
import { expect } from 'vitest'
import { waitFor } from './fake-registry.js'
import type { TestGateway } from './gateway.js'

/** Descriptors vitest's worker may open or close on its own while a test runs. */
const FD_TOLERANCE = 2
/** Healthy responses required after the fault, on top of those before it. */
const AFTER_FAULT = 3

export function openDescriptors(): number {
  return readdirSync('/proc/self/fd').length
}

function describeDescriptors(): string {
  const kinds = new Map<string, number>()
  for (const fd of readdirSync('/proc/self/fd')) {
    let kind = 'gone'
    try {
      kind = readlinkSync(`/proc/self/fd/${fd}`).replace(/\[\d+\]$/, '').replace(/^\/.*/, 'file')
    } catch {
      // closed between the listing and the readlink
    }
    kinds.set(kind, (kinds.get(kind) ?? 0) + 1)
  }
  return [...kinds].map(([k, n]) => `${k} x${n}`).join(', ')
}

/** Gateway-side state that must be empty once every client is gone. */
export function gatewayLeaks(gw: TestGateway): string[] {
  const engine = gw.gw.engine
  const out: string[] = []
  if (engine.connections.size !== 0) out.push(`${engine.connections.size} client connection(s) open`)
  if (engine.tunnels.size !== 0) out.push(`${engine.tunnels.size} tunnel(s) open`)
  for (const t of gw.gw.targets.all()) if (t.active !== 0) out.push(`target ${t.key} has active=${t.active}`)
  return out
}

/**
 * Two loops of GETs to `path` on the gateway (keep-alive, and every third one on a new
 * connection), each expecting 200 "ok" from the healthy upstream.
 */
class HealthyTraffic {
  ok = 0
  readonly failures: string[] = []
  private stopped = false
  private readonly agent = new http.Agent({ keepAlive: true, maxSockets: 2 })
  private readonly loops: Promise<void>[]
  private n = 0

  constructor(private readonly port: number, private readonly path: string) {
    this.loops = [this.loop(), this.loop()]
  }

  private async loop(): Promise<void> {
    while (!this.stopped) {
      const n = ++this.n
      const fresh = n % 3 === 0
      try {
        const { status, body } = await this.get(`${this.path}/${n}`, fresh)
        if (status === 200 && body === 'ok') this.ok++
        else this.failures.push(`GET ${this.path}/${n}: ${status} ${JSON.stringify(body.slice(0, 200))}`)
      } catch (err) {
        this.failures.push(`GET ${this.path}/${n}: ${(err as Error).message}`)
      }
    }
  }

  private get(path: string, fresh: boolean): Promise<{ status: number; body: string }> {
    return new Promise((resolve, reject) => {
      const req = http.get({ host: '127.0.0.1', port: this.port, path, agent: fresh ? false : this.agent, headers: fresh ? { connection: 'close' } : {} }, (res) => {
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (d: string) => (body += d))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
        res.on('error', reject)
      })
      req.setTimeout(5000, () => req.destroy(new Error('no answer in 5 s')))
      req.on('error', reject)
    })
  }

  async stop(): Promise<void> {
    this.stopped = true
    await Promise.all(this.loops)
    this.agent.destroy()
  }
}

export class SurvivalCheck {
  readonly crashes: string[] = []
  readonly baselineFds: number
  private readonly traffic: HealthyTraffic
  private disposed = false
  private readonly onCrash = (err: unknown): void => {
    this.crashes.push(err instanceof Error ? (err.stack ?? err.message) : String(err))
  }

  private constructor(private readonly gw: TestGateway, path: string) {
    process.on('uncaughtException', this.onCrash)
    process.on('unhandledRejection', this.onCrash)
    this.baselineFds = openDescriptors()
    this.traffic = new HealthyTraffic(gw.port(), path)
  }

  /**
   * Takes the descriptor baseline (call it once the servers are up and before the fault)
   * and starts the healthy stream; resolves once it has had a few answers.
   */
  static async start(gw: TestGateway, path = '/healthy'): Promise<SurvivalCheck> {
    const check = new SurvivalCheck(gw, path)
    await waitFor(() => check.traffic.ok >= AFTER_FAULT || check.traffic.failures.length > 0, 5000, 'the healthy stream to start')
    return check
  }

  /**
   * After the fault: a few more healthy answers, then the stream stops and every gateway
   * connection, tunnel, in-use slot and descriptor must be gone within `deadlineMs`.
   */
  async finish(deadlineMs = 5000): Promise<void> {
    const target = this.traffic.ok + AFTER_FAULT
    await waitFor(() => this.traffic.ok >= target || this.traffic.failures.length > 0, 5000, 'healthy answers after the fault').catch(() => {})
    await this.traffic.stop()
    let leaks: string[] = []
    let fds = 0
    const deadline = performance.now() + deadlineMs
    for (;;) {
      leaks = gatewayLeaks(this.gw)
      fds = openDescriptors()
      if ((leaks.length === 0 && fds <= this.baselineFds + FD_TOLERANCE) || performance.now() > deadline) break
      await new Promise((r) => setTimeout(r, 10))
    }
    const kinds = describeDescriptors()
    this.dispose()
    expect(this.crashes, 'uncaught exceptions or unhandled rejections').toEqual([])
    expect(this.traffic.failures, 'the healthy route failed during the fault').toEqual([])
    expect(this.traffic.ok).toBeGreaterThanOrEqual(target)
    expect(leaks, 'gateway state after the fault').toEqual([])
    expect(fds, `open descriptors (baseline ${this.baselineFds}; now ${kinds})`).toBeLessThanOrEqual(this.baselineFds + FD_TOLERANCE)
  }

  /** Removes the crash guard and stops the stream (also for a test that failed early). */
  dispose(): void {
    if (this.disposed) return
    this.disposed = true
    process.off('uncaughtException', this.onCrash)
    process.off('unhandledRejection', this.onCrash)
    void this.traffic.stop()
  }
}
