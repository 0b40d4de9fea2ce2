// Many idle websocket tunnels: opens `count` connections, `concurrency` handshakes at a time,
// and keeps them open until closed. `verify` sends one message on each and counts echoes, to
// show the tunnels reach the upstream and are not merely accepted by the proxy.
import WebSocket from 'ws'

export interface OpenTunnels {
  readonly opened: number
  readonly failed: number
  readonly seconds: number
  /** Round trips that came back, one message per tunnel. */
  verify(timeoutMs: number): Promise<number>
  close(): Promise<void>
}

function openOne(url: string): Promise<WebSocket | null> {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, { perMessageDeflate: false, handshakeTimeout: 10_000 })
    ws.once('open', () => {
      ws.removeAllListeners('error')
      ws.on('error', () => {})
      resolve(ws)
    })
    ws.once('error', () => {
      ws.terminate()
      resolve(null)
    })
  })
}

export async function openTunnels(url: string, count: number, concurrency: number): Promise<OpenTunnels> {
  const sockets: WebSocket[] = []
  let failed = 0
  let next = 0
  const t0 = performance.now()
  const worker = async (): Promise<void> => {
    while (next < count) {
      next++
      const ws = await openOne(url)
      if (ws) sockets.push(ws)
      else failed++
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker))
  const seconds = (performance.now() - t0) / 1000
  return {
    opened: sockets.length,
    failed,
    seconds,
    async verify(timeoutMs: number): Promise<number> {
      let echoed = 0
      await Promise.race([
        Promise.all(sockets.map((ws) => new Promise<void>((resolve) => {
          ws.once('message', () => {
            echoed++
            resolve()
          })
          ws.send('ping')
        }))),
        new Promise((resolve) => setTimeout(resolve, timeoutMs).unref()),
      ])
      return echoed
    },
    async close(): Promise<void> {
      await Promise.all(sockets.map((ws) => new Promise<void>((resolve) => {
        if (ws.readyState === WebSocket.CLOSED) return resolve()
        ws.once('close', () => resolve())
        ws.terminate()
      })))
    },
  }
}
