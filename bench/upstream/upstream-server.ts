// The upstream every target forwards to, run in its own process so it never shares the
// loader's event loop. Kept lean on purpose: the "direct" rows measure it, and it is the
// ceiling every proxy row sits under.
//   GET (any path)  -> 200 "hello world\n" with content-length
//   GET /bytes/N    -> 200 with N bytes (content-length), written with backpressure (the soak)
//   POST            -> 200 "<bytes received>\n"
//   websocket       -> echoes every message
// It listens on plain HTTP (with websockets) and on two HTTPS ports (ECDSA and RSA
// certificates) for the direct HTTPS and handshake rows, reports its ports over IPC, and
// exits when the runner disconnects.
import { readFileSync } from 'node:fs'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { createServer as createHttpsServer } from 'node:https'
import type { AddressInfo } from 'node:net'
import { WebSocketServer, type RawData, type WebSocket } from 'ws'

export interface UpstreamArgs {
  readonly ecdsa: { readonly cert: string; readonly key: string }
  readonly rsa: { readonly cert: string; readonly key: string }
  /** Plain HTTP port; 0 or absent: any free port. The soak restarts the upstream on the same one. */
  readonly httpPort?: number
}

export interface UpstreamReady {
  readonly type: 'ready'
  readonly httpPort: number
  readonly httpsPorts: { readonly ecdsa: number; readonly rsa: number }
}

const HELLO = Buffer.from('hello world\n')
const HELLO_HEADERS = { 'content-type': 'text/plain', 'content-length': String(HELLO.length) }

class BodyCounter {
  private bytes = 0
  constructor(private readonly res: ServerResponse) {}
  onData = (chunk: Buffer): void => {
    this.bytes += chunk.length
  }
  onEnd = (): void => {
    const body = `${this.bytes}\n`
    this.res.writeHead(200, { 'content-type': 'text/plain', 'content-length': String(body.length) })
    this.res.end(body)
  }
}

const FILLER = Buffer.alloc(65536, 'b')

/** Writes `total` bytes, waiting for 'drain' whenever the socket is full. */
function sendBytes(res: ServerResponse, total: number): void {
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(total) })
  let left = total
  const pump = (): void => {
    while (left > 0 && !res.destroyed) {
      const n = Math.min(left, FILLER.length)
      left -= n
      if (!res.write(n === FILLER.length ? FILLER : FILLER.subarray(0, n))) {
        res.once('drain', pump)
        return
      }
    }
    if (left === 0) res.end()
  }
  pump()
}

function handle(req: IncomingMessage, res: ServerResponse): void {
  if (req.method === 'POST' || req.method === 'PUT') {
    const counter = new BodyCounter(res)
    req.on('data', counter.onData)
    req.on('end', counter.onEnd)
    return
  }
  if (req.url!.startsWith('/bytes/')) {
    const n = Number(req.url!.slice(7))
    if (Number.isSafeInteger(n) && n >= 0 && n <= 1 << 30) return sendBytes(res, n)
  }
  res.writeHead(200, HELLO_HEADERS)
  res.end(HELLO)
}

function echo(this: WebSocket, data: RawData, isBinary: boolean): void {
  this.send(data as Buffer, { binary: isBinary })
}

function tune(server: Server): void {
  // Longer than any proxy's pooled idle time, so the pool, not the upstream, decides reuse.
  server.keepAliveTimeout = 120_000
  server.headersTimeout = 125_000
  server.requestTimeout = 0
}

function listen(server: Server, port = 0): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, '127.0.0.1', 4096, () => resolve((server.address() as AddressInfo).port))
  })
}

async function main(): Promise<void> {
  const args = JSON.parse(process.argv[2] ?? '{}') as UpstreamArgs
  const http = createServer(handle)
  tune(http)
  const wss = new WebSocketServer({ server: http, perMessageDeflate: false })
  wss.on('connection', (ws) => {
    ws.on('message', echo)
    ws.on('error', () => ws.terminate())
  })
  const servers = {
    ecdsa: createHttpsServer({ cert: readFileSync(args.ecdsa.cert), key: readFileSync(args.ecdsa.key) }, handle),
    rsa: createHttpsServer({ cert: readFileSync(args.rsa.cert), key: readFileSync(args.rsa.key) }, handle),
  }
  for (const server of Object.values(servers)) {
    tune(server)
    // Handshake loops hang up right after the handshake; that is expected, not an error.
    server.on('tlsClientError', () => {})
  }
  const ready: UpstreamReady = {
    type: 'ready',
    httpPort: await listen(http, args.httpPort ?? 0),
    httpsPorts: { ecdsa: await listen(servers.ecdsa), rsa: await listen(servers.rsa) },
  }
  process.send?.(ready)
  process.once('disconnect', () => process.exit(0))
}

void main()
