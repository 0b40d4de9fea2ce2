// One HTTP/1.1 connection to an upstream target: sends a request head, reads the response
// with strict framing (RFC 9112 section 6.3) and streams the body to whoever sent the request
// (the sink). Socket listeners are attached once per socket, not once per request; the sink
// changes with each exchange.

import net from 'node:net'
import { GatewayError } from '../errors.js'
import { HeadError } from '../http1/head-error.js'
import { ChunkedScanner } from '../http1/chunked-scanner.js'
import { ResponseHead, parseResponseHead } from '../http1/response-head.js'
import { Outbox } from '../outbox.js'
import { probeEndForReset } from '../reset-probe.js'
import type { Expirable } from '../timers.js'
import { upstreamSocketError } from './upstream-error.js'
import type { Target } from './target.js'

/** Response heads from upstreams may carry large Set-Cookie or CSP headers. */
export const MAX_RESPONSE_HEAD_BYTES = 65536
const MAX_RESPONSE_HEADERS = 256
/**
 * 1xx responses relayed before the final one. Real servers send one or two (100 Continue,
 * 103 Early Hints); an upstream that keeps sending them would have the gateway queue them for
 * a client that may not be reading, without end.
 */
export const MAX_INTERIM_RESPONSES = 16
const CRLFCRLF = Buffer.from('\r\n\r\n', 'latin1')

export interface ResponseSink {
  /** A 1xx interim response (100 Continue, 103 Early Hints); the final one follows. */
  onInterim(head: ResponseHead): void
  /** `bodyFollows`: body bytes arrived with the head and are passed on right after. */
  onResponseHead(head: ResponseHead, bodyless: boolean, bodyFollows: boolean): void
  /** `buf[start..end)` is response body, framing bytes included (chunked is passed through). */
  onResponseBody(buf: Buffer, start: number, end: number): void
  onResponseEnd(): void
  /** The 101 answer to an upgrade request; `rest` holds bytes the upstream sent after it. */
  onUpgrade(head: ResponseHead, rest: Buffer | null): void
  /**
   * Any failure. `retryable`: a reused connection died before a single response byte (a
   * stale keep-alive). `connectFailed`: nothing reached the upstream at all.
   */
  onUpstreamError(err: GatewayError, retryable: boolean, connectFailed: boolean): void
  onUpstreamDrain(): void
}

const enum State { Connecting, Idle, AwaitHead, Body, Upgraded, Closed }

export class UpstreamConnection implements Expirable {
  readonly socket: net.Socket
  /** Every write of a request goes through it (outbox.ts). */
  private readonly out: Outbox
  deadline = 0
  /** True once it served a response: a failure before any byte may be a stale keep-alive. */
  reused = false
  /** The connection may go back to the pool after the current response. */
  reusable = false
  private state = State.Connecting
  private sink: ResponseSink | null = null
  private buf: Buffer | null = null
  private bytesThisExchange = 0
  private interims = 0
  private bodyless = false
  private expectUpgrade = false
  private remaining = 0
  private scanner: ChunkedScanner | null = null
  private untilClose = false
  private responseTimeoutMs = 0
  /** False while the request body is still going out: the response clock has not started. */
  private requestSent = true

  constructor(readonly target: Target, connectDeadline: number) {
    // Half-open, so that an end can be checked for a reset (onEnd); every path that sees the
    // end destroys the socket itself.
    this.socket = net.connect({ host: target.host, port: target.port, noDelay: true, allowHalfOpen: true })
    this.out = new Outbox(this.socket)
    this.deadline = connectDeadline
    this.socket.on('connect', () => this.onConnect())
    this.socket.on('data', (chunk: Buffer) => this.onData(chunk))
    this.socket.on('end', () => this.onEnd())
    this.socket.on('error', (err: NodeJS.ErrnoException) => this.onError(err))
    this.socket.on('close', () => this.onClose())
    this.socket.on('drain', () => this.sink?.onUpstreamDrain())
  }

  get connected(): boolean {
    return this.state !== State.Connecting
  }

  get closed(): boolean {
    return this.state === State.Closed
  }

  /**
   * Starts an exchange: writes the request head (and the first body bytes, when given).
   * Writes made before the socket connects are queued by node and flushed on connect.
   * `requestSent`: nothing more of the request follows; otherwise the rest of its body does,
   * and `bodySent` is called after it.
   */
  send(sink: ResponseSink, head: string, body: Buffer | null, bodyless: boolean, upgrade: boolean, responseTimeoutMs: number, requestSent: boolean): boolean {
    this.sink = sink
    this.bodyless = bodyless
    this.expectUpgrade = upgrade
    this.bytesThisExchange = 0
    this.interims = 0
    this.reusable = false
    this.responseTimeoutMs = responseTimeoutMs
    this.requestSent = requestSent
    if (this.state !== State.Connecting) {
      this.state = State.AwaitHead
      this.deadline = requestSent ? Date.now() + responseTimeoutMs : 0
    }
    const s = this.socket
    if (body === null || body.length === 0) return this.out.write(head)
    this.out.flush()
    s.cork()
    s.write(head, 'latin1')
    const ok = s.write(body)
    s.uncork()
    return ok
  }

  /** Backpressure from the client: stop reading, and stop timing the upstream meanwhile. */
  pauseReading(): void {
    this.socket.pause()
    if (this.state === State.Body) this.deadline = 0
  }

  resumeReading(): void {
    this.socket.resume()
    if (this.state === State.Body) this.deadline = Date.now() + this.responseTimeoutMs
  }

  /** More request body. Returns false when the socket buffer is full (wait for drain). */
  write(chunk: Buffer): boolean {
    return this.out.write(chunk)
  }

  /**
   * The request body is through: the upstream has responseTimeoutMs from now to start its
   * answer. An upload may take longer than that; while it flows, the client's body deadline
   * is the one that runs (HAProxy's "timeout server" also counts only while the server owes
   * something).
   */
  bodySent(): void {
    this.requestSent = true
    if (this.state === State.AwaitHead) this.deadline = Date.now() + this.responseTimeoutMs
  }

  /** Leaves the pool's idle list to serve a request; the caller then calls `send`. */
  detachSink(): void {
    this.sink = null
  }

  /** Hands the raw socket over (websocket tunnel): no more parsing, no more deadlines. */
  takeSocket(): net.Socket {
    this.out.flush()
    this.state = State.Upgraded
    this.deadline = 0
    this.sink = null
    this.socket.allowHalfOpen = false // the tunnel passes a FIN on and closes both (tunnel.ts)
    this.socket.removeAllListeners('data')
    this.socket.removeAllListeners('end')
    this.socket.removeAllListeners('drain')
    this.socket.removeAllListeners('error')
    this.socket.removeAllListeners('close')
    this.target.forget(this)
    return this.socket
  }

  /** Marks the connection idle in its pool. */
  park(idleDeadline: number): void {
    this.state = State.Idle
    this.sink = null
    this.deadline = idleDeadline
    this.reused = true
  }

  /**
   * Abandons an exchange in flight (the client left, or its request was refused midway): a
   * reset, so the upstream learns at once that nobody will read its answer, rather than a FIN
   * it may not read for a long time (a server busy with a slow handshake, say).
   */
  abort(): void {
    this.close(true)
  }

  destroy(): void {
    this.close(false)
  }

  /** `reset`: an RST rather than a FIN (a socket still connecting just goes). */
  private close(reset: boolean): void {
    if (this.state === State.Closed) return
    if (this.state === State.Connecting) this.target.trialAbandoned()
    this.state = State.Closed
    this.deadline = 0
    this.sink = null
    if (reset && !this.socket.connecting) this.socket.resetAndDestroy()
    else this.socket.destroy()
  }

  expire(): void {
    switch (this.state) {
      case State.Connecting:
        this.target.markFailed('connect timeout')
        this.fail(new GatewayError('upstream_unreachable', `connecting to ${this.target.key} timed out`), false, true)
        break
      case State.AwaitHead:
        this.fail(new GatewayError('upstream_timeout', `${this.target.key} sent no response head in ${this.responseTimeoutMs} ms`), false)
        break
      case State.Body:
        // HAProxy's "timeout server" mid-body: a response that stalls is cut off (the client
        // sees an abort), not held open forever.
        this.fail(new GatewayError('upstream_timeout', `${this.target.key} sent nothing for ${this.responseTimeoutMs} ms mid-response`), false)
        break
      default:
        // Idle in the pool past upstreamIdleMs: close it before the upstream does (a race
        // that otherwise surfaces as a reset on reuse).
        this.destroy()
    }
  }

  private onConnect(): void {
    if (this.state !== State.Connecting) return
    this.target.markUp()
    if (this.sink !== null) {
      this.state = State.AwaitHead
      this.deadline = this.requestSent ? Date.now() + this.responseTimeoutMs : 0
    } else {
      this.state = State.Idle
      this.deadline = 0
    }
  }

  private onData(chunk: Buffer): void {
    this.bytesThisExchange += chunk.length
    switch (this.state) {
      case State.AwaitHead:
        this.readHead(chunk)
        return
      case State.Body:
        if (this.deadline !== 0) this.deadline = Date.now() + this.responseTimeoutMs
        this.readBody(chunk, 0)
        return
      case State.Idle:
      case State.Connecting:
        // Bytes nobody asked for (a 204 that had a body after all, a server talking out of
        // turn): the connection's framing can no longer be trusted.
        this.destroy()
        return
      default:
        return
    }
  }

  private readHead(chunk: Buffer): void {
    let buf = this.buf === null ? chunk : Buffer.concat([this.buf, chunk])
    for (;;) {
      const end = buf.indexOf(CRLFCRLF)
      if (end === -1) {
        const lf = buf.indexOf(10)
        if (buf.length > MAX_RESPONSE_HEAD_BYTES) {
          this.fail(new GatewayError('upstream_bad_response', `${this.target.key} sent a response head over ${MAX_RESPONSE_HEAD_BYTES} bytes`), false)
        } else if (lf !== -1 && (lf === 0 || buf[lf - 1] !== 13)) {
          // A head with bare LF line endings never completes: refuse it now, not at responseMs.
          this.fail(new GatewayError('upstream_bad_response', `${this.target.key} sent bare LF in the response head`), false)
        } else {
          this.buf = buf
        }
        return
      }
      if (end + 4 > MAX_RESPONSE_HEAD_BYTES) {
        this.fail(new GatewayError('upstream_bad_response', `${this.target.key} sent a response head over ${MAX_RESPONSE_HEAD_BYTES} bytes`), false)
        return
      }
      let head: ResponseHead
      try {
        head = parseResponseHead(buf.toString('latin1', 0, end), MAX_RESPONSE_HEADERS, buf)
      } catch (err) {
        const why = err instanceof HeadError ? err.message : String(err)
        this.fail(new GatewayError('upstream_bad_response', `${this.target.key} sent ${why}`), false)
        return
      }
      const restStart = end + 4
      const status = head.status
      if (status < 200 && status !== 101) {
        if (++this.interims > MAX_INTERIM_RESPONSES) {
          this.fail(new GatewayError('upstream_bad_response', `${this.target.key} sent more than ${MAX_INTERIM_RESPONSES} interim (1xx) responses`), false)
          return
        }
        this.sink?.onInterim(head)
        buf = buf.subarray(restStart)
        this.buf = null
        if (buf.length === 0) return
        continue
      }
      this.buf = null
      this.deadline = 0
      if (status === 101) {
        if (!this.expectUpgrade) {
          this.fail(new GatewayError('upstream_bad_response', `${this.target.key} switched protocols unasked`), false)
          return
        }
        this.state = State.Upgraded
        const sink = this.sink
        sink?.onUpgrade(head, restStart < buf.length ? buf.subarray(restStart) : null)
        return
      }
      this.startBody(head, buf, restStart)
      return
    }
  }

  private startBody(head: ResponseHead, buf: Buffer, start: number): void {
    const sink = this.sink
    if (sink === null) return
    // RFC 9112 section 6.3 items 1-2: no body after HEAD, 1xx, 204, 304, whatever the headers.
    const noBody = this.bodyless || head.status === 204 || head.status === 304
    if (head.status === 204 && (head.contentLength > 0 || head.chunked || head.untilClose)) {
      this.fail(new GatewayError('upstream_bad_response', `${this.target.key} sent a 204 with a body`), false)
      return
    }
    if (noBody) {
      if (start < buf.length) {
        this.fail(new GatewayError('upstream_bad_response', `${this.target.key} sent bytes after a bodyless response`), false)
        return
      }
      this.reusable = head.keepAlive
      this.state = State.Idle
      sink.onResponseHead(head, true, false)
      this.finish()
      return
    }
    this.state = State.Body
    this.deadline = Date.now() + this.responseTimeoutMs
    this.untilClose = false
    this.scanner = null
    if (head.chunked) {
      this.scanner = new ChunkedScanner(MAX_RESPONSE_HEAD_BYTES)
    } else if (head.contentLength >= 0) {
      this.remaining = head.contentLength
    } else {
      // RFC 9112 section 6.3 item 8: no length at all, the body runs until the upstream
      // closes. Said on the head too, so the client side closes after relaying it.
      this.untilClose = true
      head.untilClose = true
      head.keepAlive = false
    }
    this.reusable = head.keepAlive && !this.untilClose
    sink.onResponseHead(head, false, start < buf.length)
    if (this.sink !== sink) return // the client went away while the head was written
    if (!head.chunked && head.contentLength === 0) {
      if (start < buf.length) {
        this.fail(new GatewayError('upstream_bad_response', `${this.target.key} sent more than its Content-Length`), false)
        return
      }
      this.state = State.Idle
      this.finish()
      return
    }
    if (start < buf.length) this.readBody(buf, start)
  }

  private readBody(buf: Buffer, start: number): void {
    const sink = this.sink
    if (sink === null) return
    if (this.untilClose) {
      sink.onResponseBody(buf, start, buf.length)
      return
    }
    let end: number
    if (this.scanner !== null) {
      end = this.scanner.scan(buf, start)
      if (end === -2) {
        this.fail(new GatewayError('upstream_bad_response', `${this.target.key} sent a malformed chunked body (${this.scanner.error})`), false)
        return
      }
      if (end === -1) {
        sink.onResponseBody(buf, start, buf.length)
        return
      }
    } else {
      const available = buf.length - start
      if (available < this.remaining) {
        this.remaining -= available
        sink.onResponseBody(buf, start, buf.length)
        return
      }
      end = start + this.remaining
      this.remaining = 0
    }
    if (end > start) sink.onResponseBody(buf, start, end)
    if (this.sink !== sink) return
    if (end < buf.length) {
      // More bytes than the framing announced: pass the response on, then drop the socket.
      this.reusable = false
    }
    this.state = State.Idle
    this.finish()
  }

  private finish(): void {
    this.deadline = 0
    const sink = this.sink
    this.sink = null
    this.scanner = null
    sink?.onResponseEnd()
  }

  private onEnd(): void {
    if (this.state === State.Body && this.untilClose) {
      // A body that runs to close is whole only if the upstream closed, not if it reset, and
      // an 'end' may be a reset (reset-probe.ts). On a reset the socket errors: onError
      // aborts the client.
      probeEndForReset(this.socket, (reset) => { if (!reset) this.closedAfterBody() })
      return
    }
    this.fail(new GatewayError('upstream_reset', `${this.target.key} closed the connection mid-response`), this.reused && this.bytesThisExchange === 0)
  }

  /** The upstream closed (FIN, not reset) at the end of a body that runs to close. */
  private closedAfterBody(): void {
    if (this.state !== State.Body) return // failed meanwhile (timed out, or the client left)
    this.state = State.Idle
    this.reusable = false
    this.finish()
    this.destroy()
  }

  private onError(err: NodeJS.ErrnoException): void {
    const connecting = this.state === State.Connecting
    const e = upstreamSocketError(err, this.target.key, !connecting)
    if (connecting) this.target.markFailed(err.code ?? err.message)
    this.fail(e, this.reused && this.bytesThisExchange === 0 && this.state === State.AwaitHead, connecting)
  }

  private onClose(): void {
    this.fail(new GatewayError('upstream_reset', `${this.target.key} closed the connection`), this.reused && this.bytesThisExchange === 0 && this.state === State.AwaitHead)
    this.target.forget(this)
  }

  private fail(err: GatewayError, retryable: boolean, connectFailed = false): void {
    const sink = this.sink
    this.destroy()
    if (sink !== null) sink.onUpstreamError(err, retryable, connectFailed)
  }
}
