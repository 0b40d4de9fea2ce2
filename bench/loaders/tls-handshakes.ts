// Full TLS handshakes per second: `concurrency` loops, each connecting, completing the
// handshake, hanging up and starting over. No session is offered (no `session` option, a
// fresh context each time), so every handshake is a full one with the server's signature.
// Latency is connect -> secureConnect.
import { connect, type TLSSocket } from 'node:tls'
import { LatencyRecorder } from './latency-recorder.js'
import { fromLatencies, type Measurement } from './measurement.js'

export interface HandshakeLoad {
  readonly host: string
  readonly port: number
  readonly concurrency: number
  readonly seconds: number
}

class HandshakeLoop {
  private socket: TLSSocket | null = null
  private started = 0

  constructor(private readonly run: HandshakeRun) {}

  next(): void {
    if (this.run.stopped) return this.run.loopDone()
    this.started = performance.now()
    const socket = connect({ host: this.run.load.host, port: this.run.load.port, servername: 'localhost', rejectUnauthorized: false })
    this.socket = socket
    socket.on('secureConnect', this.onSecure)
    socket.on('error', this.onError)
  }

  private onSecure = (): void => {
    this.run.latency.add(performance.now() - this.started)
    this.socket!.destroy()
    this.next()
  }

  private onError = (): void => {
    this.socket!.destroy()
    this.run.errors++
    this.next()
  }
}

class HandshakeRun {
  readonly latency = new LatencyRecorder()
  stopped = false
  errors = 0
  private running = 0
  private finish: () => void = () => {}

  constructor(readonly load: HandshakeLoad) {}

  go(): Promise<void> {
    return new Promise((resolve) => {
      this.finish = resolve
      this.running = this.load.concurrency
      for (let i = 0; i < this.load.concurrency; i++) new HandshakeLoop(this).next()
      setTimeout(() => {
        this.stopped = true
      }, this.load.seconds * 1000)
    })
  }

  loopDone(): void {
    if (--this.running === 0) this.finish()
  }
}

export async function runHandshakes(load: HandshakeLoad): Promise<Measurement> {
  const run = new HandshakeRun(load)
  const t0 = performance.now()
  await run.go()
  const seconds = (performance.now() - t0) / 1000
  return fromLatencies('handshakes/s', 'node-tls', run.latency, seconds, run.errors)
}
