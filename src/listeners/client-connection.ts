// One front connection (HTTP or HTTPS): reads request heads strictly, routes them, streams
// the body to an upstream connection and the response back, one exchange at a time, with
// backpressure both ways. It is the only place that decides what the client is told when
// something fails (`fail`), and it always leaves both sockets of the pair closed or reusable.

import type { Socket } from 'node:net'
import type { HttpsRedirectConfig } from '../config/types.js'
import { GatewayError, renderError } from '../errors.js'
import { ChunkedScanner } from '../http1/chunked-scanner.js'
import { HeadError } from '../http1/head-error.js'
import { RequestHead, parseRequestHead, requestLineProblem } from '../http1/request-head.js'
import type { ResponseHead } from '../http1/response-head.js'
import { requestDone, tunnelOpened, tunnelClosed, upstreamFailed } from '../observability/channels.js'
import { Outbox } from '../outbox.js'
import type { Destination } from '../routing/router.js'
import type { Expirable } from '../timers.js'
import { requestIdOf, serializeRequestHead, serializeResponseHead } from '../upstream/forwarded-headers.js'
import type { Target } from '../upstream/target.js'
import type { ResponseSink, UpstreamConnection } from '../upstream/upstream-connection.js'
import { checkUpgradeResponse } from '../websocket/handshake.js'
import { Tunnel } from '../websocket/tunnel.js'
import type { Engine } from './engine.js'
import { httpsLocation, redirectStatus, renderRedirect } from './https-redirect.js'

const CRLFCRLF = Buffer.from('\r\n\r\n', 'latin1')
/** Bytes read ahead while an exchange is in flight (pipelined requests) before pausing. */
const READ_AHEAD_BYTES = 65536
/** Targets tried before a connect failure is answered 502 (HAProxy's default "retries 3"). */
const MAX_CONNECT_ATTEMPTS = 3
/** Response heads and first body chunks up to this size are sent as one buffer. */
const COALESCE_BYTES = 16384
/** ms a connection the gateway ended waits for the client's FIN (lingering close). */
const LINGER_MS = 5000

export interface ListenerContext {
  readonly name: string
  /** "http" or "https": what X-Forwarded-Proto says. */
  readonly proto: string
  /** The bound port (X-Forwarded-Port). */
  port: number
  /** Changes in place on reload (Listener.adopt). */
  workspacesOnly: boolean
  /** Set: requests are redirected to HTTPS but for routes with `allowHttp` (Listener.adopt). */
  redirectToHttps: HttpsRedirectConfig | null
  readonly engine: Engine
  /** Open connections on this listener (for /metrics and draining). */
  open: number
}

const enum State {
  /** Waiting for (more of) a request head. */
  Head,
  /** Head read; finding the destination and an upstream connection. */
  Routing,
  /** Streaming the request body upstream. */
  Body,
  /** Request sent; the response is awaited or streaming. */
  Waiting,
  /** Handed to a websocket tunnel. */
  Tunnel,
  /** Ending or gone. */
  Closed,
}

export class ClientConnection implements ResponseSink, Expirable {
  deadline = 0
  private state = State.Head
  private readonly clientAddress: string
  /** Every write to the client goes through it (outbox.ts). */
  private readonly out: Outbox
  private buf: Buffer | null = null
  private requests = 0
  // The exchange in flight.
  private head: RequestHead | null = null
  private dest: Destination | null = null
  private target: Target | null = null
  private upstream: UpstreamConnection | null = null
  private upstreamHead = ''
  private requestId = ''
  private bodyRemaining = 0
  private scanner: ChunkedScanner | null = null
  private reqDone = false
  private resStarted = false
  /** socket.writableLength when a slow reader was last seen making progress. */
  private queuedMark = 0
  /** A response head held back to go out with the first body bytes. */
  private pendingHead: string | null = null
  private closeAfter = false
  private retried = false
  /** Targets tried for this request (connect failures move on to the next). */
  private connectAttempts = 1
  /** The whole request body, kept until the upstream connects (for a retry elsewhere). */
  private replayBody: Buffer | null = null
  private clientEnded = false
  private pausedForUpstream = false
  private pausedForReadAhead = false
  private upstreamPaused = false
  private status = 0
  private errorCode: string | null = null
  private startedAt = 0
  private bytesIn = 0
  private bytesOut = 0

  /** `clientAddress`: the peer's, or the one a PROXY protocol header named. */
  constructor(readonly socket: Socket, readonly ctx: ListenerContext, clientAddress: string) {
    const engine = ctx.engine
    this.clientAddress = clientAddress
    this.out = new Outbox(socket)
    socket.setNoDelay(true)
    socket.on('data', (chunk: Buffer) => this.onData(chunk))
    socket.on('end', () => this.onClientEnd())
    socket.on('drain', () => this.onClientDrain())
    socket.on('error', () => this.onClientGone())
    socket.on('close', () => this.onClientGone())
    engine.connections.add(this)
    engine.sweeper.add(this)
    ctx.open++
    if (engine.settings.limits.maxConnectionsPerClient > 0) {
      this.countedPerClient = true
      engine.perClient.set(this.clientAddress, (engine.perClient.get(this.clientAddress) ?? 0) + 1)
    }
    this.deadline = engine.sweeper.after(engine.settings.timeouts.headersMs)
  }

  /** True when no exchange is in flight and no bytes of the next one have arrived. */
  get idle(): boolean {
    return this.state === State.Head && this.buf === null
  }

  // ---- the request side -------------------------------------------------------------

  private onData(chunk: Buffer): void {
    this.bytesIn += chunk.length
    switch (this.state) {
      case State.Head:
        this.readHead(chunk)
        return
      case State.Body:
        this.deadline = this.ctx.engine.sweeper.after(this.ctx.engine.settings.timeouts.responseMs)
        this.forwardBody(chunk, 0)
        return
      case State.Routing:
      case State.Waiting:
        // Body bytes before the upstream is ready, or the next pipelined request: keep a
        // bounded amount, then stop reading until this exchange is over.
        this.buf = this.buf === null ? chunk : Buffer.concat([this.buf, chunk])
        if (this.buf.length > READ_AHEAD_BYTES && !this.pausedForReadAhead) {
          this.pausedForReadAhead = true
          this.socket.pause()
        }
        return
      default:
        return
    }
  }

  private readHead(chunk: Buffer | null): void {
    const fresh = this.buf === null
    let buf = this.buf === null ? chunk! : chunk === null ? this.buf : Buffer.concat([this.buf, chunk])
    this.buf = null
    const engine = this.ctx.engine
    const limits = engine.settings.limits
    // RFC 9112 section 2.2: ignore empty lines before a request line.
    let skip = 0
    while (skip + 1 < buf.length && buf[skip] === 13 && buf[skip + 1] === 10 && skip < 64) skip += 2
    if (skip > 0) buf = buf.subarray(skip)
    if (buf.length === 0) return
    const end = buf.indexOf(CRLFCRLF)
    if (end === -1) {
      if (buf.length > limits.maxHeaderBytes) {
        this.fail(new GatewayError('headers_too_large', `request head over ${limits.maxHeaderBytes} bytes`))
        return
      }
      // A bare LF can never complete a head, and a bad request line (HTTP/0.9's "GET /")
      // will not get better with more fields: refuse both now rather than at the timeout.
      const lf = buf.indexOf(10)
      if (lf !== -1 && (lf === 0 || buf[lf - 1] !== 13)) {
        this.fail(new GatewayError('bad_request', 'bare LF in the request head'))
        return
      }
      if (lf !== -1) {
        const problem = requestLineProblem(buf.toString('latin1', 0, lf - 1))
        if (problem !== null) {
          this.fail(new GatewayError('bad_request', problem))
          return
        }
      }
      if (this.requests > 0 && fresh) {
        // First bytes of the next request on a kept-alive connection: the head clock starts.
        this.deadline = engine.sweeper.after(engine.settings.timeouts.headersMs)
      }
      this.buf = buf
      return
    }
    if (end + 4 > limits.maxHeaderBytes) {
      this.fail(new GatewayError('headers_too_large', `request head over ${limits.maxHeaderBytes} bytes`))
      return
    }
    let head: RequestHead
    try {
      head = parseRequestHead(buf.toString('latin1', 0, end), limits.maxHeaderCount, buf)
    } catch (err) {
      if (err instanceof HeadError) {
        this.fail(new GatewayError(err.kind === 'too_large' ? 'headers_too_large' : 'bad_request', err.message))
      } else {
        this.fail(new GatewayError('bad_request', 'unparseable request head'))
      }
      return
    }
    head.size = end + 4
    this.startRequest(head, buf, end + 4)
  }

  private startRequest(head: RequestHead, buf: Buffer, bodyStart: number): void {
    const engine = this.ctx.engine
    this.requests++
    this.deadline = 0
    this.state = State.Routing
    this.head = head
    this.startedAt = performance.now()
    this.bytesIn = buf.length // the head and what came with it; the rest is counted as it flows
    this.bytesOut = 0
    this.status = 0
    this.errorCode = null
    this.reqDone = !head.hasBody
    this.resStarted = false
    this.retried = false
    // HTTP/1.0 clients get one exchange per connection: simpler than keep-alive negotiation
    // for a client this old, and always correct.
    this.closeAfter = !head.keepAlive || head.minor === 0 || engine.draining
    this.requestId = requestIdOf(head, engine.nextRequestId())
    this.buf = bodyStart < buf.length ? buf.subarray(bodyStart) : null
    if (this.buf !== null && this.buf.length > READ_AHEAD_BYTES && !this.pausedForReadAhead) {
      this.pausedForReadAhead = true
      this.socket.pause()
    }
    const redirect = this.ctx.redirectToHttps
    if (redirect !== null && !engine.router.allowsHttp(head, this.ctx.workspacesOnly)) {
      this.redirect(head, redirect)
      return
    }
    const maxBody = engine.settings.limits.maxBodyBytes
    if (head.contentLength > maxBody) {
      this.fail(new GatewayError('body_too_large', `Content-Length ${head.contentLength} over the ${maxBody}-byte limit`))
      return
    }
    let dest: Destination | Promise<Destination>
    try {
      dest = engine.router.route(head, this.ctx.workspacesOnly)
    } catch (err) {
      this.fail(toGatewayError(err))
      return
    }
    if (dest instanceof Promise) {
      dest.then(
        (d) => { if (this.head === head && this.state === State.Routing) this.forward(d) },
        (err) => { if (this.head === head && this.state === State.Routing) this.fail(toGatewayError(err)) },
      )
      return
    }
    this.forward(dest)
  }

  private forward(dest: Destination): void {
    const engine = this.ctx.engine
    this.dest = dest
    const target = dest.pick(engine.sweeper.now, null)
    if (target === null) {
      this.fail(new GatewayError('no_healthy_upstream', `every target of route ${dest.routeId} is out of rotation`))
      return
    }
    const head = this.head!
    this.upstreamHead = serializeRequestHead(head, {
      clientAddress: this.clientAddress,
      proto: this.ctx.proto,
      port: this.ctx.port,
      requestId: this.requestId,
      stripCookies: dest.workspaceKey !== null && engine.settings.stripCookies.size > 0 ? engine.settings.stripCookies : null,
    })
    this.connectTo(target)
  }

  /** Starts (or restarts, after a connect failure elsewhere) the exchange on `target`. */
  private connectTo(target: Target): void {
    const head = this.head!
    const engine = this.ctx.engine
    this.target = target
    const conn = head.websocket ? target.acquireFresh() : target.acquire()
    this.upstream = conn
    const timeouts = engine.settings.timeouts
    const bodyless = head.method === 'HEAD'
    if (this.replayBody !== null) {
      // A retry after a connect failure: the whole body was kept, send it again.
      this.state = State.Waiting
      conn.send(this, this.upstreamHead, this.replayBody, bodyless, false, timeouts.responseMs, true)
    } else if (head.hasBody) {
      this.state = State.Body
      this.deadline = engine.sweeper.after(timeouts.responseMs)
      this.bodyRemaining = head.contentLength
      this.scanner = head.chunked ? new ChunkedScanner(engine.settings.limits.maxHeaderBytes, true) : null
      const pending = this.buf
      this.buf = null
      conn.socket.cork()
      conn.send(this, this.upstreamHead, null, bodyless, false, timeouts.responseMs, false)
      if (pending !== null) this.forwardBody(pending, 0)
      conn.socket.uncork()
      // A body that came whole with the head is kept until the upstream is known to be
      // reachable, so a connect failure can be retried on another target.
      if (this.reqDone && pending !== null && !conn.connected) {
        const rest = this.buf as Buffer | null // forwardBody may have set it (pipelined bytes)
        this.replayBody = pending.subarray(0, pending.length - (rest === null ? 0 : rest.length))
      }
    } else {
      this.state = State.Waiting
      conn.send(this, this.upstreamHead, null, bodyless, head.websocket, timeouts.responseMs, true)
    }
    if (this.pausedForReadAhead && this.state === State.Body) {
      this.pausedForReadAhead = false
      if (!this.pausedForUpstream) this.socket.resume()
    }
  }

  private forwardBody(buf: Buffer, start: number): void {
    const conn = this.upstream!
    let end: number
    if (this.scanner === null) {
      const n = Math.min(this.bodyRemaining, buf.length - start)
      this.bodyRemaining -= n
      end = this.bodyRemaining === 0 ? start + n : -1
      if (n > 0) this.writeUpstream(conn, start === 0 && n === buf.length ? buf : buf.subarray(start, start + n))
    } else {
      end = this.scanner.scan(buf, start)
      if (end === -2) {
        this.fail(new GatewayError('bad_request', `malformed chunked body: ${this.scanner.error}`))
        return
      }
      const maxBody = this.ctx.engine.settings.limits.maxBodyBytes
      if (this.scanner.payload > maxBody) {
        this.fail(new GatewayError('body_too_large', `chunked body over the ${maxBody}-byte limit`))
        return
      }
      const stop = end === -1 ? buf.length : end
      if (stop > start) this.writeUpstream(conn, start === 0 && stop === buf.length ? buf : buf.subarray(start, stop))
    }
    if (end === -1 || this.state !== State.Body) return
    // The body is complete; what follows is the next pipelined request.
    if (end < buf.length) this.buf = this.buf === null ? buf.subarray(end) : Buffer.concat([this.buf, buf.subarray(end)])
    this.reqDone = true
    this.state = State.Waiting
    this.deadline = 0
    conn.bodySent()
  }

  private writeUpstream(conn: UpstreamConnection, chunk: Buffer): void {
    if (!conn.write(chunk) && !this.pausedForUpstream) {
      this.pausedForUpstream = true
      this.socket.pause()
    }
  }

  onUpstreamDrain(): void {
    if (this.pausedForUpstream) {
      this.pausedForUpstream = false
      if (!this.pausedForReadAhead) this.socket.resume()
    }
  }

  // ---- the response side ------------------------------------------------------------

  onInterim(head: ResponseHead): void {
    // RFC 9110 section 15.2: 1xx responses are not sent to HTTP/1.0 clients.
    if (this.head !== null && this.head.minor === 1) this.out.write(serializeResponseHead(head, false))
  }

  onResponseHead(head: ResponseHead, bodyless: boolean, bodyFollows: boolean): void {
    if (head.chunked && !bodyless && this.head!.minor === 0) {
      // RFC 9112 section 6.1: chunked is never sent to an HTTP/1.0 request; an HTTP/1.0
      // client could not find the end of the body.
      this.fail(new GatewayError('upstream_bad_response', `${this.target!.key} answered an HTTP/1.0 request with a chunked body`))
      return
    }
    this.replayBody = null
    this.status = head.status
    this.resStarted = true
    // A body that runs to close, a request body still coming, a refused upgrade (relayed as
    // is, then both sides close), or shutdown: this is the connection's last response. An
    // HTTP/1.0 request went upstream with Connection: close, so nothing more may follow it on
    // that connection either, whatever the upstream answered (RFC 9112 section 9.6).
    if (head.untilClose || !this.reqDone || this.ctx.engine.draining || this.head!.websocket || this.head!.minor === 0) {
      this.closeAfter = true
      this.upstream!.reusable = false
    }
    const out = serializeResponseHead(head, this.closeAfter)
    this.bytesOut += out.length
    // Body bytes that came with the head go out in the same write (one syscall, no writev).
    if (bodyFollows && !bodyless) this.pendingHead = out
    else this.out.write(out)
  }

  onResponseBody(buf: Buffer, start: number, end: number): void {
    this.bytesOut += end - start
    let ok: boolean
    const head = this.pendingHead
    if (head !== null) {
      this.pendingHead = null
      if (end - start <= COALESCE_BYTES) {
        const out = Buffer.allocUnsafe(head.length + end - start)
        out.write(head, 0, 'latin1')
        buf.copy(out, head.length, start, end)
        ok = this.out.write(out)
      } else {
        this.out.write(head)
        ok = this.out.write(buf.subarray(start, end))
      }
    } else {
      ok = this.out.write(start === 0 && end === buf.length ? buf : buf.subarray(start, end))
    }
    if (!ok && !this.upstreamPaused && this.upstream !== null) {
      // The client is not keeping up: stop reading the upstream, and give the client
      // clientReadMs without progress before it is cut off.
      this.upstreamPaused = true
      this.upstream.pauseReading()
      this.queuedMark = this.socket.writableLength
      this.deadline = this.ctx.engine.sweeper.after(this.ctx.engine.settings.timeouts.clientReadMs)
    }
  }

  private onClientDrain(): void {
    if (this.upstreamPaused) {
      this.upstreamPaused = false
      this.deadline = 0
      this.upstream?.resumeReading()
    }
  }

  onResponseEnd(): void {
    if (this.pendingHead !== null) {
      this.out.write(this.pendingHead)
      this.pendingHead = null
    }
    if (!this.reqDone) {
      // The upstream answered before the request body was through (an early 413, say): the
      // rest of the body would be unframed on this connection, so both sides close.
      this.closeAfter = true
      this.upstream!.reusable = false
    }
    this.finishExchange()
  }

  onUpgrade(head: ResponseHead, rest: Buffer | null): void {
    const req = this.head!
    const why = checkUpgradeResponse(head, req.wsKey!)
    const conn = this.upstream!
    if (why !== null) {
      this.fail(new GatewayError('upstream_bad_response', `${conn.target.key} sent ${why}`))
      return
    }
    const engine = this.ctx.engine
    if (this.clientEnded) {
      // The client sent its FIN while the upstream was deciding: a websocket that can no
      // longer send is a client that left. No tunnel; the upstream learns at once.
      this.fail(new GatewayError('bad_request', 'the client closed its side before the websocket handshake completed'))
      return
    }
    const out = serializeResponseHead(head, false)
    this.status = 101
    this.bytesOut += out.length
    this.out.write(out)
    if (rest !== null) this.out.write(rest)
    this.out.flush() // before the tunnel's own Outbox writes to the socket
    const upstreamSocket = conn.takeSocket()
    this.target!.active--
    this.upstream = null
    // From here on the tunnel owns both sockets; this object only keeps the books.
    this.state = State.Tunnel
    this.deadline = 0
    this.socket.removeAllListeners('data')
    this.socket.removeAllListeners('end')
    this.socket.removeAllListeners('drain')
    if (this.buf !== null) {
      upstreamSocket.write(this.buf)
      this.buf = null
    }
    if (this.pausedForReadAhead || this.pausedForUpstream) {
      this.pausedForReadAhead = this.pausedForUpstream = false
      this.socket.resume()
    }
    this.publishDone()
    const info = { listener: this.ctx.name, target: conn.target.key, workspaceKey: this.dest!.workspaceKey, routeId: this.dest!.routeId }
    const tunnel = new Tunnel(this.socket, upstreamSocket, info, engine.settings.timeouts.tunnelIdleMs, engine.sweeper, (t) => {
      engine.tunnels.delete(t)
      if (tunnelClosed.hasSubscribers) tunnelClosed.publish({ ...info, durationMs: t.durationMs, bytesUp: t.bytesUp, bytesDown: t.bytesDown })
    })
    engine.tunnels.add(tunnel)
    if (tunnelOpened.hasSubscribers) tunnelOpened.publish(info)
  }

  onUpstreamError(err: GatewayError, retryable: boolean, connectFailed: boolean): void {
    const head = this.head
    const target = this.target
    if (head === null || target === null) return
    this.upstream = null
    target.active--
    target.errors++
    if (upstreamFailed.hasSubscribers) upstreamFailed.publish({ target: target.key, code: err.code, message: err.message })
    // Nothing reached the upstream: any method may go to another target (HAProxy's
    // "option redispatch"), as long as the body, if any, was kept whole.
    if (connectFailed && this.connectAttempts < MAX_CONNECT_ATTEMPTS && (!head.hasBody || this.replayBody !== null)) {
      const next = this.dest!.pick(this.ctx.engine.sweeper.now, target)
      if (next !== null) {
        this.connectAttempts++
        this.connectTo(next)
        return
      }
    }
    // A pooled connection that died before answering may just have been closed by the
    // upstream's keep-alive timer: retry once on a fresh one, for safe bodiless methods only.
    if (retryable && !this.retried && !this.resStarted && !head.hasBody &&
        (head.method === 'GET' || head.method === 'HEAD' || head.method === 'OPTIONS')) {
      this.retried = true
      const conn = target.acquireFresh()
      this.upstream = conn
      const t = this.ctx.engine.settings.timeouts
      conn.send(this, this.upstreamHead, null, head.method === 'HEAD', head.websocket, t.responseMs, true)
      return
    }
    this.fail(err)
  }

  private finishExchange(): void {
    this.publishDone()
    const conn = this.upstream
    if (conn !== null) {
      this.upstream = null
      if (this.upstreamPaused) {
        this.upstreamPaused = false
        conn.resumeReading()
      }
      if (!this.reqDone) conn.reusable = false
      this.target!.release(conn)
    }
    this.resetExchange()
    const engine = this.ctx.engine
    if (this.closeAfter || this.clientEnded) {
      this.endAndLinger()
      return
    }
    this.state = State.Head
    this.deadline = engine.sweeper.after(engine.settings.timeouts.keepAliveMs)
    if (this.buf !== null) {
      this.deadline = engine.sweeper.after(engine.settings.timeouts.headersMs)
      this.readHead(null)
    }
  }

  private resetExchange(): void {
    this.resStarted = false
    this.head = null
    this.dest = null
    this.target = null
    this.scanner = null
    this.replayBody = null
    this.pendingHead = null
    if (this.pausedForUpstream || this.pausedForReadAhead) {
      // Nothing waits for this exchange any more (an upstream drain would now go to no one):
      // read the client again, or the next request never comes, and a connection that is
      // closing never sees the client's FIN (and never goes).
      this.pausedForUpstream = this.pausedForReadAhead = false
      this.socket.resume()
    }
  }

  private publishDone(): void {
    if (!requestDone.hasSubscribers) return
    // A head that failed to parse is reported too, with "-" for what it never said.
    const head = this.head
    const durationMs = performance.now() - this.startedAt
    requestDone.publish({
      listener: this.ctx.name,
      clientAddress: this.clientAddress,
      method: head?.method ?? '-',
      host: head?.host ?? null,
      path: head?.path ?? '-',
      status: this.status,
      bytesIn: this.bytesIn,
      bytesOut: this.bytesOut,
      durationMs,
      routeId: this.dest?.routeId ?? null,
      target: this.target?.key ?? null,
      requestId: this.requestId,
      error: this.errorCode,
      // when the head was complete, to the millisecond: now less the exchange's duration
      time: Math.round(Date.now() - durationMs),
    })
  }

  // ---- failures and the end of the connection ---------------------------------------

  /**
   * The one place a failure reaches the client: an error response when nothing of the
   * response was sent yet, else an abort (a reset, so a truncated body is never taken for a
   * complete one). The connection closes either way: after an error the byte stream of the
   * request may be out of step. The upstream connection, if any, is dropped.
   */
  fail(err: GatewayError): void {
    if (this.state === State.Closed || this.state === State.Tunnel) return
    const conn = this.upstream
    if (conn !== null) {
      this.upstream = null
      conn.abort()
      this.target!.active--
    }
    this.errorCode = err.code
    if (this.pendingHead !== null) {
      // The response head was held back to go out with the body, which failed: nothing was
      // written, so the client can still get a proper error response.
      this.pendingHead = null
      this.resStarted = false
    }
    if (this.resStarted) {
      this.publishDone()
      this.abort()
      return
    }
    this.status = err.statusCode
    const head = this.head
    if (head === null) this.startedAt = performance.now()
    this.answerAndClose(head === null ? renderError(err, true) : renderError(err, true, {
      accept: headerValue(head, 'accept'),
      errorPage: this.dest?.errorPage ?? null,
      head: head.method === 'HEAD',
    }))
  }

  /** Sends the client to the same host and target on HTTPS; the request body is not read. */
  private redirect(head: RequestHead, redirect: HttpsRedirectConfig): void {
    const location = httpsLocation(head, redirect)
    if (location === null) {
      const host = head.host === null ? 'no Host' : `Host ${JSON.stringify(head.host)}`
      this.fail(new GatewayError('bad_request', `this listener redirects to HTTPS, and a request with ${host} and target ${JSON.stringify(head.target)} names no HTTPS address`))
      return
    }
    this.status = redirectStatus(head.method, redirect.permanent)
    this.answerAndClose(renderRedirect(this.status, location))
  }

  /** The gateway's own answer (no upstream has a part in it): sent, then the connection closes. */
  private answerAndClose(out: Buffer): void {
    this.bytesOut += out.length
    this.publishDone()
    this.resetExchange()
    this.endAndLinger(out)
  }

  /**
   * Ends the gateway's side, after `out` when given, and waits LINGER_MS for the client to
   * close its own (lingering close; `expire` destroys a client that never does).
   */
  private endAndLinger(out?: Buffer): void {
    this.state = State.Closed
    this.deadline = this.ctx.engine.sweeper.after(LINGER_MS)
    this.out.end(out)
  }

  private abort(): void {
    this.state = State.Closed
    this.resetExchange()
    // A TCP reset tells the client the response is incomplete, even when it was running to
    // close. resetAndDestroy() only works on plain TCP handles (it throws on TLS sockets);
    // over TLS a close without close_notify says the same. What was relayed goes out first.
    this.out.flush()
    if (this.ctx.proto === 'http') this.socket.resetAndDestroy()
    else this.socket.destroy()
  }

  expire(): void {
    switch (this.state) {
      case State.Head:
        if (this.requests > 0 && this.buf === null) {
          this.endAndLinger() // an idle keep-alive connection: close quietly
        } else {
          this.fail(new GatewayError('request_timeout', `request head not complete in ${this.ctx.engine.settings.timeouts.headersMs} ms`))
        }
        return
      case State.Body:
        // Body bytes wait for the upstream to take them: the stall is the upstream's.
        if (this.pausedForUpstream) this.fail(new GatewayError('upstream_timeout', `${this.target!.key} took none of the request body for ${this.ctx.engine.settings.timeouts.responseMs} ms`))
        else this.fail(new GatewayError('request_timeout', 'the request body stalled'))
        return
      case State.Closed:
        this.socket.destroy() // a peer that never read our final answer
        return
      case State.Waiting:
        if (this.upstreamPaused) {
          // A slow reader is fine as long as it reads: the queue shrinks as the kernel takes
          // more of it. A whole clientReadMs without progress: it stopped reading.
          const queued = this.socket.writableLength
          if (queued < this.queuedMark) {
            this.queuedMark = queued
            this.deadline = this.ctx.engine.sweeper.after(this.ctx.engine.settings.timeouts.clientReadMs)
            return
          }
          this.fail(new GatewayError('request_timeout', 'the client stopped reading the response'))
          return
        }
        this.deadline = 0
        return
      default:
        this.deadline = 0
    }
  }

  /** Shutdown: close now when idle, else after the exchange in flight. */
  drain(): void {
    this.closeAfter = true
    if (this.idle) this.endAndLinger()
  }

  private onClientEnd(): void {
    this.clientEnded = true
    switch (this.state) {
      case State.Head:
        // FIN between requests, or in the middle of a head that will never complete.
        if (this.buf !== null) this.fail(new GatewayError('bad_request', 'the connection ended inside a request head'))
        else {
          this.state = State.Closed
          this.out.end()
        }
        return
      case State.Body:
        // The client gave up mid-upload: the upstream must not wait for the rest.
        this.fail(new GatewayError('bad_request', 'the connection ended inside a request body'))
        return
      default:
        // Request complete: the response still goes out, then the connection closes.
        this.closeAfter = true
    }
  }

  private onClientGone(): void {
    if (this.state === State.Tunnel) {
      this.forget()
      return
    }
    const conn = this.upstream
    if (conn !== null) {
      // The response has nowhere to go; the upstream connection is in an unknown state.
      this.upstream = null
      conn.abort()
      this.target!.active--
      if (this.errorCode === null) this.errorCode = 'client_closed'
      this.publishDone()
    }
    this.state = State.Closed
    this.resetExchange()
    this.forget()
  }

  private forgotten = false
  private countedPerClient = false
  private forget(): void {
    if (this.forgotten) return
    this.forgotten = true
    const engine = this.ctx.engine
    engine.connections.delete(this)
    engine.sweeper.delete(this)
    this.ctx.open--
    if (this.countedPerClient) {
      const n = (engine.perClient.get(this.clientAddress) ?? 1) - 1
      if (n <= 0) engine.perClient.delete(this.clientAddress)
      else engine.perClient.set(this.clientAddress, n)
    }
    if (!this.socket.destroyed) this.socket.destroy()
  }
}

function headerValue(head: RequestHead, lower: string): string | null {
  const i = head.lowerNames.indexOf(lower)
  return i === -1 ? null : head.headers[i * 2 + 1]
}

function toGatewayError(err: unknown): GatewayError {
  if (err instanceof GatewayError) return err
  return new GatewayError('bad_request', err instanceof Error ? err.message : String(err))
}
