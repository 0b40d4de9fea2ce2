// Websocket echo through a tunnel: `clients` connections, each sending one message, waiting
// for its echo and sending the next, for `seconds`. The figure is round trips per second;
// latency is the round trip.
import WebSocket, { type RawData } from 'ws'
import { LatencyRecorder } from './latency-recorder.js'
import { fromLatencies, type Measurement } from './measurement.js'

export interface WsEchoLoad {
  readonly url: string
  readonly clients: number
  readonly seconds: number
  readonly messageBytes: number
}

class EchoClient {
  private sent = 0
  private finished = false
  readonly ws: WebSocket

  constructor(private readonly run: EchoRun) {
    this.ws = new WebSocket(run.load.url, { perMessageDeflate: false })
    this.ws.on('message', this.onMessage)
    this.ws.on('error', this.onError)
    this.ws.on('close', this.onClose)
  }

  opened(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.ws.once('open', () => resolve())
      this.ws.once('error', reject)
    })
  }

  send(): void {
    this.sent = performance.now()
    this.ws.send(this.run.payload)
  }

  private onMessage = (_data: RawData): void => {
    this.run.latency.add(performance.now() - this.sent)
    if (this.run.stopped) return this.done()
    this.send()
  }

  // Counted in onClose, which always follows.
  private onError = (): void => {}

  /** A tunnel that dies mid-run stops counting instead of stalling the run. */
  private onClose = (): void => {
    if (!this.run.stopped) this.run.errors++
    this.done()
  }

  private done(): void {
    if (this.finished) return
    this.finished = true
    this.run.clientDone()
  }
}

class EchoRun {
  readonly latency = new LatencyRecorder()
  readonly payload: Buffer
  stopped = false
  errors = 0
  private running = 0
  private finish: () => void = () => {}

  constructor(readonly load: WsEchoLoad) {
    this.payload = Buffer.alloc(load.messageBytes, 'x')
  }

  async go(): Promise<number> {
    const clients = Array.from({ length: this.load.clients }, () => new EchoClient(this))
    try {
      await Promise.all(clients.map((c) => c.opened()))
      const t0 = performance.now()
      await new Promise<void>((resolve) => {
        this.finish = resolve
        this.running = clients.length
        for (const client of clients) client.send()
        setTimeout(() => {
          this.stopped = true
        }, this.load.seconds * 1000)
        // A stuck echo (no answer, no close) ends the run 5 s late rather than never.
        setTimeout(resolve, this.load.seconds * 1000 + 5000).unref()
      })
      return (performance.now() - t0) / 1000
    } finally {
      for (const client of clients) client.ws.terminate()
    }
  }

  clientDone(): void {
    if (--this.running === 0) this.finish()
  }
}

export async function runWsEcho(load: WsEchoLoad): Promise<Measurement> {
  const run = new EchoRun(load)
  const seconds = await run.go()
  return fromLatencies('msg/s', 'node-ws', run.latency, seconds, run.errors)
}
