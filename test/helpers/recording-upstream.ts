// A raw TCP upstream that records every byte it receives, split into requests (its own small
// HTTP/1.1 framer: Content-Length and chunked), and answers each complete request through a
// responder the test sets. Tests use it to prove what the gateway forwarded, byte for byte,
// and how many connections it opened.

import { EventEmitter, once } from 'node:events'
import net from 'node:net'

export interface UpstreamRequest {
  readonly conn: RecordedConnection
  /** Position of this request on its connection (0 first). */
  readonly index: number
  /** The head as received, without the final CRLFCRLF. */
  readonly head: string
  readonly method: string
  readonly target: string
  readonly version: string
  /** Field lines as sent: names keep their case. */
  readonly headers: [string, string][]
  /** The body bytes as framed on the wire (chunk framing and trailers included). */
  body: Buffer
  /** First value of a field, by case-insensitive name. */
  get(name: string): string | undefined
  /** Every value of a field, by case-insensitive name. */
  all(name: string): string[]
}

export interface RecordedConnection {
  readonly id: number
  readonly socket: net.Socket
  /** Every byte received on this connection. */
  received: Buffer
  readonly requests: UpstreamRequest[]
  closed: boolean
  /** Resolves when the socket closes (the gateway closed or reset it, or we did). */
  readonly closedPromise: Promise<void>
  /** Set when the bytes could not be framed (the framer then stops splitting). */
  malformed: string | null
}

export type Responder = (req: UpstreamRequest, socket: net.Socket) => void

export interface RecordingUpstream {
  readonly port: number
  readonly target: string
  readonly connections: RecordedConnection[]
  readonly requests: UpstreamRequest[]
  /** Answers each complete request; defaults to `200` with the request target as the body. */
  respond: Responder
  /** 'connection' (conn), 'head' (req, before its body), 'request' (req, complete). */
  readonly events: EventEmitter
  /** Resolves with the next request whose head arrives (or one already here, by count). */
  nextHead(): Promise<UpstreamRequest>
  /** Total bytes received on every connection. */
  bytesReceived(): number
  close(): Promise<void>
}

export const okResponder: Responder = (req, socket) => {
  socket.write(`HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(req.target)}\r\n\r\n${req.target}`)
}

export async function recordingUpstream(respond: Responder = okResponder): Promise<RecordingUpstream> {
  const events = new EventEmitter()
  const connections: RecordedConnection[] = []
  const requests: UpstreamRequest[] = []
  let headsSeen = 0
  let headsTaken = 0
  const server = net.createServer({ allowHalfOpen: false }, (socket) => {
    socket.on('error', () => {})
    let resolveClosed!: () => void
    const conn: RecordedConnection = {
      id: connections.length,
      socket,
      received: Buffer.alloc(0),
      requests: [],
      closed: false,
      closedPromise: new Promise<void>((r) => { resolveClosed = r }),
      malformed: null,
    }
    connections.push(conn)
    socket.on('close', () => {
      conn.closed = true
      resolveClosed()
    })
    const framer = new RequestFramer(conn, (req) => {
      requests.push(req)
      headsSeen++
      events.emit('head', req)
    }, (req) => {
      events.emit('request', req)
      up.respond(req, socket)
    })
    socket.on('data', (chunk: Buffer) => {
      conn.received = Buffer.concat([conn.received, chunk])
      framer.push(chunk)
    })
    events.emit('connection', conn)
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const port = (server.address() as net.AddressInfo).port
  const up: RecordingUpstream = {
    port,
    target: `127.0.0.1:${port}`,
    connections,
    requests,
    respond,
    events,
    nextHead() {
      const want = headsTaken++
      if (want < headsSeen) return Promise.resolve(requests[want])
      return new Promise((resolve) => {
        const on = (): void => {
          if (want < headsSeen) {
            events.off('head', on)
            resolve(requests[want])
          }
        }
        events.on('head', on)
      })
    },
    bytesReceived: () => connections.reduce((n, c) => n + c.received.length, 0),
    async close() {
      for (const c of connections) c.socket.destroy()
      await new Promise((r) => server.close(r))
    },
  }
  return up
}

const CRLFCRLF = Buffer.from('\r\n\r\n')

/** Splits a connection's bytes into requests. Deliberately simple: tests control the input. */
class RequestFramer {
  private buf = Buffer.alloc(0)
  private current: UpstreamRequest | null = null
  private remaining = 0
  private chunked = false

  constructor(private readonly conn: RecordedConnection, private readonly onHead: (r: UpstreamRequest) => void, private readonly onDone: (r: UpstreamRequest) => void) {}

  push(chunk: Buffer): void {
    if (this.conn.malformed !== null) return
    this.buf = Buffer.concat([this.buf, chunk])
    for (;;) {
      if (this.current === null) {
        const end = this.buf.indexOf(CRLFCRLF)
        if (end === -1) return
        const head = this.buf.toString('latin1', 0, end)
        this.buf = this.buf.subarray(end + 4)
        const req = makeRequest(this.conn, head)
        this.conn.requests.push(req)
        this.current = req
        const te = req.get('transfer-encoding')
        const cl = req.get('content-length')
        this.chunked = te !== undefined && te.toLowerCase().includes('chunked')
        this.remaining = this.chunked ? 0 : cl === undefined ? 0 : Number(cl)
        this.onHead(req)
      }
      const req = this.current
      if (this.chunked) {
        const end = chunkedEnd(this.buf)
        if (end === -2) {
          this.conn.malformed = 'chunked'
          req.body = Buffer.concat([req.body, this.buf])
          return
        }
        if (end === -1) return
        req.body = Buffer.concat([req.body, this.buf.subarray(0, end)])
        this.buf = this.buf.subarray(end)
      } else {
        const take = Math.min(this.remaining, this.buf.length)
        req.body = Buffer.concat([req.body, this.buf.subarray(0, take)])
        this.buf = this.buf.subarray(take)
        this.remaining -= take
        if (this.remaining > 0) return
      }
      this.current = null
      this.onDone(req)
      if (this.buf.length === 0) return
    }
  }
}

/** Index just past a complete chunked body at the start of `buf`, -1 if incomplete, -2 if malformed. */
function chunkedEnd(buf: Buffer): number {
  let pos = 0
  for (;;) {
    const eol = buf.indexOf('\r\n', pos)
    if (eol === -1) return -1
    const sizeText = buf.toString('latin1', pos, eol).split(';')[0]
    if (!/^[0-9a-fA-F]+$/.test(sizeText)) return -2
    const size = parseInt(sizeText, 16)
    pos = eol + 2
    if (size === 0) {
      // Trailers, then an empty line.
      for (;;) {
        const e = buf.indexOf('\r\n', pos)
        if (e === -1) return -1
        if (e === pos) return pos + 2
        pos = e + 2
      }
    }
    if (buf.length < pos + size + 2) return -1
    if (buf[pos + size] !== 13 || buf[pos + size + 1] !== 10) return -2
    pos += size + 2
  }
}

function makeRequest(conn: RecordedConnection, head: string): UpstreamRequest {
  const lines = head.split('\r\n')
  const [method = '', target = '', version = ''] = lines[0].split(' ')
  const headers: [string, string][] = []
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':')
    headers.push([line.slice(0, colon), line.slice(colon + 1).trim()])
  }
  return {
    conn,
    index: conn.requests.length,
    head,
    method,
    target,
    version,
    headers,
    body: Buffer.alloc(0),
    get: (name) => headers.find(([n]) => n.toLowerCase() === name.toLowerCase())?.[1],
    all: (name) => headers.filter(([n]) => n.toLowerCase() === name.toLowerCase()).map(([, v]) => v),
  }
}
