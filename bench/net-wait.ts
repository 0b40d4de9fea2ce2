// Ports and readiness: the runner picks free loopback ports up front (HAProxy and the gateway
// take fixed ports from their configs) and waits for a child to answer before loading it.
import { request } from 'node:http'
import { connect, createServer } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'

/** A port that was free a moment ago (bind to 0, read, close). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      const port = typeof address === 'object' && address ? address.port : 0
      server.close(() => resolve(port))
    })
  })
}

export function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port })
    socket.once('connect', () => {
      socket.destroy()
      resolve(true)
    })
    socket.once('error', () => resolve(false))
  })
}

/** The status `url` answers with; 0 when it cannot be reached. */
export function getStatus(url: string): Promise<number> {
  return new Promise((resolve) => {
    const req = request(url, { timeout: 1000, agent: false }, (res) => {
      res.resume()
      resolve(res.statusCode ?? 0)
    })
    req.once('timeout', () => req.destroy())
    req.once('error', () => resolve(0))
    req.end()
  })
}

export interface WaitOptions {
  readonly deadlineMs: number
  /** Rejects early when the process dies before it is ready. */
  readonly exited?: Promise<unknown>
  readonly what: string
}

async function pollUntil(check: () => Promise<boolean>, options: WaitOptions): Promise<void> {
  let dead = false
  options.exited?.then(() => {
    dead = true
  })
  const deadline = Date.now() + options.deadlineMs
  for (;;) {
    if (dead) throw new Error(`${options.what} exited before it was ready`)
    if (await check()) return
    if (Date.now() > deadline) throw new Error(`${options.what} not ready after ${options.deadlineMs} ms`)
    await sleep(50)
  }
}

export function waitForPort(port: number, options: WaitOptions): Promise<void> {
  return pollUntil(() => canConnect(port), options)
}

/** Until `url` answers 200. */
export function waitForOk(url: string, options: WaitOptions): Promise<void> {
  return pollUntil(async () => (await getStatus(url)) === 200, options)
}
