// A connection per request without wrk: `concurrency` loops, each opening a TCP connection,
// sending one request with `Connection: close`, reading until the server closes, and
// starting over. Being a Node client it saturates a core sooner than wrk, so its figures are
// lower than wrk's for the same target; compare rows of one loader only.
import { connect, type Socket } from 'node:net'
import { LatencyRecorder } from './latency-recorder.js'
import { fromLatencies, type HttpLoad, type HttpLoader, type Measurement } from './measurement.js'

class Loop {
  private socket: Socket | null = null
  private started = 0
  private head = ''

  constructor(private readonly run: SocketLoopRun) {}

  next(): void {
    if (this.run.stopped) return this.run.loopDone()
    this.started = performance.now()
    this.head = ''
    const socket = connect({ host: this.run.host, port: this.run.port })
    this.socket = socket
    socket.setNoDelay(true)
    socket.on('connect', this.onConnect)
    socket.on('data', this.onData)
    socket.on('end', this.onEnd)
    socket.on('error', this.onError)
  }

  // write, not end: a half-close before the response makes Node servers abort the request.
  private onConnect = (): void => {
    this.socket!.write(this.run.request)
  }

  private onData = (chunk: Buffer): void => {
    if (this.head.length < 12) this.head += chunk.toString('latin1', 0, Math.min(chunk.length, 12))
  }

  private onEnd = (): void => {
    this.socket!.destroy()
    if (this.head.startsWith('HTTP/1.1 2') || this.head.startsWith('HTTP/1.0 2')) {
      this.run.latency.add(performance.now() - this.started)
    } else {
      this.run.non2xx++
    }
    this.next()
  }

  private onError = (): void => {
    this.socket!.destroy()
    this.run.errors++
    this.next()
  }
}

class SocketLoopRun {
  readonly latency = new LatencyRecorder()
  readonly host: string
  readonly port: number
  readonly request: Buffer
  stopped = false
  errors = 0
  non2xx = 0
  private running = 0
  private finish: () => void = () => {}

  constructor(load: HttpLoad) {
    const url = new URL(load.url)
    this.host = url.hostname
    this.port = Number(url.port || 80)
    const headers = { host: url.host, ...load.headers, connection: 'close' } as Record<string, string>
    if (load.body) {
      headers['content-type'] = 'application/octet-stream'
      headers['content-length'] = String(load.body.length)
    }
    const lines = [`${load.method} ${url.pathname}${url.search} HTTP/1.1`, ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`), '', '']
    this.request = load.body ? Buffer.concat([Buffer.from(lines.join('\r\n')), load.body]) : Buffer.from(lines.join('\r\n'))
  }

  go(concurrency: number, seconds: number): Promise<void> {
    return new Promise((resolve) => {
      this.finish = resolve
      this.running = concurrency
      for (let i = 0; i < concurrency; i++) new Loop(this).next()
      setTimeout(() => {
        this.stopped = true
      }, seconds * 1000)
    })
  }

  loopDone(): void {
    if (--this.running === 0) this.finish()
  }
}

export const socketLoopLoader: HttpLoader = {
  name: 'node-sockets',
  async run(load: HttpLoad): Promise<Measurement> {
    if (new URL(load.url).protocol !== 'http:') throw new Error('the socket loop speaks plain HTTP only')
    const run = new SocketLoopRun(load)
    const t0 = performance.now()
    await run.go(load.connections, load.seconds)
    const seconds = (performance.now() - t0) / 1000
    return fromLatencies('req/s', 'node-sockets', run.latency, seconds, run.errors, run.non2xx)
  },
}
