// The access log (config `accessLog`): one JSON line per finished exchange, to a file or to
// stdout. The request path only queues the request; every ENCODE_BATCH requests the lines are
// encoded into in-memory batch buffers, and a timer (or a full batch) hands them to one
// asynchronous write at a time. While the output is slower than the traffic, the batch grows
// to a bound and then lines are dropped and counted (gateway_access_log_dropped_total), so a
// full or stalled disk never blocks or bloats the gateway.
//
// The path is logged without its query: agents authenticate with `?token=` (contract), and an
// access log must not become a file of machine tokens.
//
// Log rotation: move the file away, then SIGUSR1 (or `reopen()`): the next write goes to a
// newly created file at the configured path (logrotate's "create" mode, like nginx's USR1).

import { close as closeFd, open as openFd, writev as writevFd } from 'node:fs'
import type { AccessLogConfig } from '../config/types.js'
import { gatewayEvent, requestDone, type RequestDoneMessage } from './channels.js'
import type { AccessLogFigures } from './metrics.js'

/** Requests encoded together, in one loop (see onRequest). */
const ENCODE_BATCH = 256

/** What a request not yet encoded is counted as against maxBufferedBytes (lines run ~300). */
const PENDING_LINE_BYTES = 256

/** Written batch buffers kept for reuse. */
const SPARE_BUFFERS = 8

/** Stands for process stdout where a file descriptor is expected. */
const STDOUT = -1

export interface AccessLogOptions {
  /** A batch this large (bytes of text) is written at once. Default 64 KiB. */
  readonly flushBytes?: number
  /** A smaller batch waits at most this long, ms. Default 200. */
  readonly flushMs?: number
  /** Text waiting for the output beyond this is dropped, bytes. Default 16 MiB. */
  readonly maxBufferedBytes?: number
  /** Where stdout lines go (tests); default process.stdout. */
  readonly stdout?: NodeJS.WritableStream
}

export class AccessLog {
  private settings: AccessLogConfig
  private readonly flushBytes: number
  private readonly flushMs: number
  private readonly maxBufferedBytes: number
  private readonly stdout: NodeJS.WritableStream

  /**
   * Lines are encoded straight into fixed-size buffers (no string joining and no second
   * copy when written): `filled` wait for the output, `current` takes new lines. Written
   * buffers go back to `spare` rather than to the garbage collector.
   */
  private filled: Buffer[] = []
  private filledLines: number[] = []
  private spare: Buffer[] = []
  private current: Buffer
  private used = 0
  private currentLines = 0
  /** Bytes waiting in `filled` and `current`. */
  private batchBytes = 0
  /** Bytes handed to the output and not yet written. */
  private inFlightBytes = 0
  private writing = false
  private timer: NodeJS.Timeout | null = null
  /** Open file descriptor; STDOUT: process stdout (or nothing open yet). */
  private fd = STDOUT
  /** The output to switch to once the running write is done; null: none. */
  private pendingFd: number | null = null
  private reopenWanted = false
  private subscribed = false
  private closed = false
  private idleWaiters: (() => void)[] = []

  private readonly encoder = new LineEncoder()
  /** Requests logged but not yet encoded (at most ENCODE_BATCH). */
  private pending: RequestDoneMessage[] = []

  lines = 0
  dropped = 0
  writeErrors = 0
  reopens = 0

  constructor(settings: AccessLogConfig, options: AccessLogOptions = {}) {
    this.settings = settings
    this.flushBytes = options.flushBytes ?? 64 * 1024
    this.flushMs = options.flushMs ?? 200
    this.maxBufferedBytes = options.maxBufferedBytes ?? 16 * 1024 * 1024
    this.stdout = options.stdout ?? process.stdout
    this.current = Buffer.allocUnsafeSlow(this.flushBytes)
  }

  figures(): AccessLogFigures {
    return { lines: this.lines, dropped: this.dropped, writeErrors: this.writeErrors, reopens: this.reopens }
  }

  /** Starts logging when enabled. Rejects when the file cannot be opened. */
  async start(): Promise<void> {
    if (!this.settings.enabled) return
    if (this.settings.path !== null) this.switchTo(await openAppend(this.settings.path))
    this.subscribe()
  }

  /**
   * New settings (reload). A new path is opened before the old file is let go; when it
   * cannot be opened the old output stays and the error is reported as an event.
   */
  async configure(settings: AccessLogConfig): Promise<void> {
    const before = this.settings
    if (before.enabled === settings.enabled && before.path === settings.path) return
    if (!settings.enabled) {
      this.settings = settings
      this.unsubscribe()
      await this.idle()
      this.switchTo(STDOUT)
      return
    }
    let fd = STDOUT
    if (settings.path !== null) {
      try {
        fd = await openAppend(settings.path)
      } catch (err) {
        this.report('access_log_error', `cannot open ${settings.path}: ${(err as Error).message}; the access log stays ${before.enabled ? `on ${before.path ?? 'stdout'}` : 'off'}`)
        return
      }
    }
    this.settings = settings
    this.switchTo(fd)
    this.subscribe()
  }

  /** Log rotation: the next batch goes to a new file at the configured path. */
  reopen(): void {
    if (this.settings.path === null || !this.settings.enabled || this.closed) return
    this.reopenWanted = true
    if (!this.writing) void this.flush()
  }

  /** Writes what is buffered, then lets the file go. */
  async close(): Promise<void> {
    if (this.closed) return
    this.unsubscribe()
    await this.idle()
    this.closed = true
    this.switchTo(STDOUT)
  }

  /** Resolves once everything logged so far is written (or dropped). */
  idle(): Promise<void> {
    if (!this.writing && this.batchBytes === 0 && this.pending.length === 0) return Promise.resolve()
    return new Promise((resolve) => {
      this.idleWaiters.push(resolve)
      if (!this.writing) void this.flush()
    })
  }

  // ---- the request path -----------------------------------------------------------------

  private readonly onRequest = (message: unknown): void => {
    if (this.batchBytes + this.inFlightBytes + this.pending.length * PENDING_LINE_BYTES > this.maxBufferedBytes) {
      this.dropped++
      return
    }
    // Encoding waits for a batch, to run back to back on warm code rather than between two
    // requests. Two gateways loaded at once, both logging, 8 rounds: against batches of 256,
    // one line at a time cost 2-5% more CPU per request, batches of 64 0-2% more, and batches
    // of 1024 (more requests kept alive through a scavenge) 2-6% more.
    this.pending.push(message as RequestDoneMessage)
    if (this.pending.length >= ENCODE_BATCH) this.encodePending()
    if (this.writing) return
    if (this.batchBytes >= this.flushBytes) void this.flush()
    else this.armTimer()
  }

  /** Encodes the waiting messages into the batch buffers. */
  private encodePending(): void {
    const pending = this.pending
    for (let i = 0; i < pending.length; i++) {
      const m = pending[i]
      const room = this.encoder.maxLength(m)
      if (this.used + room > this.current.length) this.seal(room)
      const end = this.encoder.encode(m, this.current, this.used)
      this.batchBytes += end - this.used
      this.used = end
      this.currentLines++
    }
    pending.length = 0
  }

  /** Starts the flush timer unless it runs already. */
  private armTimer(): void {
    if (this.timer !== null) return
    this.timer = setTimeout(this.onTimer, this.flushMs)
    this.timer.unref()
  }

  private readonly onTimer = (): void => {
    this.timer = null
    if (!this.writing) void this.flush()
  }

  // ---- the output ---------------------------------------------------------------------

  private async flush(): Promise<void> {
    if (this.writing) return
    this.writing = true
    if (this.timer !== null) {
      clearTimeout(this.timer)
      this.timer = null
    }
    try {
      for (let first = true; ; first = false) {
        // Between two writes nothing uses the descriptor: the place to change it.
        if (this.pendingFd !== null) {
          closeQuietly(this.fd)
          this.fd = this.pendingFd
          this.pendingFd = null
        }
        if (this.reopenWanted && this.settings.path !== null) {
          this.reopenWanted = false
          try {
            const fd = await openAppend(this.settings.path)
            closeQuietly(this.fd)
            this.fd = fd
            this.reopens++
          } catch (err) {
            this.report('access_log_error', `cannot reopen ${this.settings.path}: ${(err as Error).message}; writing on to the old file`)
          }
        }
        this.encodePending()
        if (this.batchBytes === 0) break
        // After a write, the next waits for a full batch or the timer (unless someone waits
        // for everything). Writing whatever came in meanwhile meant about 600 writes a second
        // of 9 KB under load, each a threadpool round trip and two wake-ups; now about 50 of
        // 80 KB. Side by side with a gateway without the log, log on/off went from about 0.90
        // to 0.93-0.95.
        if (!first && this.batchBytes < this.flushBytes && this.idleWaiters.length === 0) break
        if (this.used > 0) this.seal(0)
        // Everything waiting goes in one write: the output catches up in one loop turn.
        const parts = this.filled
        let size = 0
        for (const p of parts) size += p.length
        const n = this.filledLines.reduce((sum, k) => sum + k, 0)
        this.filled = []
        this.filledLines = []
        this.batchBytes -= size
        this.inFlightBytes = size
        try {
          const toFile = this.fd !== STDOUT
          await this.write(parts)
          // A stream (stdout) may hold on to what it was given; our own writev does not.
          if (toFile) this.recycle(parts)
          this.lines += n
        } catch (err) {
          this.dropped += n
          if (this.writeErrors++ % 1000 === 0) this.report('access_log_error', `cannot write the access log: ${(err as Error).message}`)
        }
        this.inFlightBytes = 0
      }
    } finally {
      this.writing = false
      for (const w of this.idleWaiters.splice(0)) w()
      if ((this.batchBytes > 0 || this.pending.length > 0) && !this.closed) this.armTimer()
    }
  }

  /** Moves the lines in `current` to `filled` and starts a buffer with room for `need` bytes. */
  private seal(need: number): void {
    if (this.used > 0) {
      this.filled.push(this.current.subarray(0, this.used))
      this.filledLines.push(this.currentLines)
    }
    this.current = need <= this.flushBytes ? this.spare.pop() ?? Buffer.allocUnsafeSlow(this.flushBytes) : Buffer.allocUnsafeSlow(need)
    this.used = 0
    this.currentLines = 0
  }

  /** Keeps a few written buffers of the standard size for the next batches. */
  private recycle(parts: Buffer[]): void {
    for (const p of parts) {
      const whole = Buffer.from(p.buffer, p.byteOffset, p.buffer.byteLength - p.byteOffset)
      if (this.spare.length < SPARE_BUFFERS && p.byteOffset === 0 && whole.length === this.flushBytes) this.spare.push(whole)
    }
  }

  /** Writes `parts` in order, as one writev where the output is a file. */
  private write(parts: Buffer[]): Promise<void> {
    if (this.fd === STDOUT) {
      return new Promise((resolve, reject) => {
        for (let i = 0; i < parts.length - 1; i++) this.stdout.write(parts[i])
        this.stdout.write(parts[parts.length - 1], (err?: Error | null) => err ? reject(err) : resolve())
      })
    }
    const fd = this.fd
    return new Promise((resolve, reject) => {
      const step = (rest: Buffer[]): void => {
        writevFd(fd, rest, null, (err, written) => {
          if (err) return reject(err)
          // A short write: skip what went out, go on with the rest.
          let skip = written
          while (rest.length > 0 && skip >= rest[0].length) skip -= rest.shift()!.length
          if (rest.length === 0) return resolve()
          if (skip > 0) rest[0] = rest[0].subarray(skip)
          step(rest)
        })
      }
      step(parts.slice())
    })
  }


  /** Makes `fd` the output (STDOUT: stdout), now if no write is running, else between two writes. */
  private switchTo(fd: number): void {
    if (this.writing) {
      if (this.pendingFd !== null) closeQuietly(this.pendingFd)
      this.pendingFd = fd
      return
    }
    if (fd !== this.fd) closeQuietly(this.fd)
    this.fd = fd
  }

  private subscribe(): void {
    if (this.subscribed || this.closed) return
    this.subscribed = true
    requestDone.subscribe(this.onRequest)
  }

  private unsubscribe(): void {
    if (!this.subscribed) return
    this.subscribed = false
    requestDone.unsubscribe(this.onRequest)
  }

  private report(event: string, message: string): void {
    if (gatewayEvent.hasSubscribers) gatewayEvent.publish({ event, message })
  }
}

/** Characters a JSON string cannot hold as they are, and everything beyond ASCII. */
const NEEDS_ESCAPE = /["\\\u0000-\u001f\u007f-\uffff]/
const NON_ASCII = /[\u007f-\uffff]/g

/**
 * A JSON string literal in ASCII only (non-ASCII as \uXXXX escapes), so that a line can be
 * copied into the batch byte for byte. Only the rare value that needs escaping takes the
 * slow way.
 */
export function jsonString(s: string | null): string {
  if (s === null) return 'null'
  if (!NEEDS_ESCAPE.test(s)) return `"${s}"`
  return JSON.stringify(s).replace(NON_ASCII, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)
}

/** Bytes a line takes beyond the characters of its strings: names, punctuation, numbers. */
const LINE_OVERHEAD = 400
/** The most bytes one character of a string field can take (`\uXXXX`). */
const MAX_ESCAPED = 6

const ascii = (s: string): Buffer => Buffer.from(s, 'latin1')
const STATUS = ascii(',"status":')
const BYTES_IN = ascii(',"bytesIn":')
const BYTES_OUT = ascii(',"bytesOut":')
const DURATION = ascii(',"durationMs":')
const ERROR = ascii(',"error":')
const NULL_END = ascii('null}\n')

/** Copies `bytes` into `buf` at `at`; returns the end. */
function putBytes(buf: Uint8Array, at: number, bytes: Uint8Array): number {
  for (let i = 0; i < bytes.length; i++) buf[at + i] = bytes[i]
  return at + bytes.length
}

/** Writes `s` as a JSON string literal in ASCII (see jsonString); returns the end. */
function putString(buf: Buffer, at: number, s: string): number {
  const start = at
  buf[at++] = 0x22
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c < 0x20 || c > 0x7e || c === 0x22 || c === 0x5c) return start + buf.write(jsonString(s), start, 'latin1')
    buf[at++] = c
  }
  buf[at++] = 0x22
  return at
}

/** Writes a number in decimal, as JSON.stringify does; returns the end. */
function putNumber(buf: Buffer, at: number, n: number): number {
  if (!(n >= 0 && n <= 0xffffffff && n % 1 === 0)) return at + buf.write(Number.isFinite(n) ? String(n) : 'null', at, 'latin1')
  let digits = 1
  for (let x = n; x >= 10; x = Math.floor(x / 10)) digits++
  for (let i = at + digits - 1; i >= at; i--) {
    buf[i] = 0x30 + (n % 10)
    n = Math.floor(n / 10)
  }
  return at + digits
}

/** Writes `n` (0-999) as exactly three digits; returns the end. */
function putThreeDigits(buf: Buffer, at: number, n: number): number {
  buf[at] = 0x30 + Math.floor(n / 100)
  buf[at + 1] = 0x30 + (Math.floor(n / 10) % 10)
  buf[at + 2] = 0x30 + (n % 10)
  return at + 3
}

/** The length of `s`, 0 for null. */
const len = (s: string | null): number => s === null ? 0 : s.length

/**
 * Encodes access-log lines straight into the batch buffer: the same JSON as JSON.stringify of
 * the fields, in ASCII, with no string built per line (building and copying one cost about
 * twice as much, and most of the log's garbage). Fields that repeat from one request to the
 * next (time to the second, client, listener, host, route, target) are encoded once, with the
 * field names around them, and copied while they stay the same.
 */
export class LineEncoder {
  private second = -1
  /** `{"time":"2026-11-29T03:34:51.` */
  private secondBytes = ascii('')
  // undefined: nothing encoded yet (every field, even '' or null, differs from it)
  private client: string | undefined = undefined
  private listener: string | undefined = undefined
  /** `Z","client":...,"listener":...,"method":` */
  private peerBytes = ascii('')
  private host: string | null | undefined = undefined
  /** `,"host":...,"path":` */
  private hostBytes = ascii('')
  private route: string | null | undefined = undefined
  private target: string | null | undefined = undefined
  /** `,"route":...,"target":...,"requestId":` */
  private routeBytes = ascii('')

  /** The most bytes encode(m) can write. */
  maxLength(m: RequestDoneMessage): number {
    const chars = m.clientAddress.length + m.listener.length + m.method.length + len(m.host) + m.path.length +
      len(m.routeId) + len(m.target) + m.requestId.length + len(m.error)
    return LINE_OVERHEAD + MAX_ESCAPED * chars
  }

  /** Writes the line for `m` into `buf` at `at`, which has maxLength(m) bytes of room; returns the end. */
  encode(m: RequestDoneMessage, buf: Buffer, at: number): number {
    const time = Math.floor(m.time)
    const ms = time % 1000
    const second = (time - ms) / 1000
    if (second !== this.second) {
      this.second = second
      this.secondBytes = ascii(`{"time":"${new Date(second * 1000).toISOString().slice(0, 19)}.`)
    }
    if (m.clientAddress !== this.client || m.listener !== this.listener) {
      this.client = m.clientAddress
      this.listener = m.listener
      this.peerBytes = ascii(`Z","client":${jsonString(m.clientAddress)},"listener":${jsonString(m.listener)},"method":`)
    }
    if (m.host !== this.host) {
      this.host = m.host
      this.hostBytes = ascii(`,"host":${jsonString(m.host)},"path":`)
    }
    if (m.routeId !== this.route || m.target !== this.target) {
      this.route = m.routeId
      this.target = m.target
      this.routeBytes = ascii(`,"route":${jsonString(m.routeId)},"target":${jsonString(m.target)},"requestId":`)
    }
    at = putBytes(buf, at, this.secondBytes)
    at = putThreeDigits(buf, at, ms)
    at = putBytes(buf, at, this.peerBytes)
    at = putString(buf, at, m.method)
    at = putBytes(buf, at, this.hostBytes)
    at = putString(buf, at, m.path)
    at = putNumber(buf, putBytes(buf, at, STATUS), m.status)
    at = putNumber(buf, putBytes(buf, at, BYTES_IN), m.bytesIn)
    at = putNumber(buf, putBytes(buf, at, BYTES_OUT), m.bytesOut)
    at = putMillis(buf, putBytes(buf, at, DURATION), m.durationMs)
    at = putBytes(buf, at, this.routeBytes)
    at = putString(buf, at, m.requestId)
    at = putBytes(buf, at, ERROR)
    if (m.error === null) return putBytes(buf, at, NULL_END)
    at = putString(buf, at, m.error)
    buf[at] = 0x7d // }
    buf[at + 1] = 0x0a
    return at + 2
  }
}

/** A non-negative duration in ms with three decimals, from integers (no float printing). */
function putMillis(buf: Buffer, at: number, ms: number): number {
  const us = Math.round(ms * 1000)
  if (!(us >= 0 && us < 2 ** 31)) return putNumber(buf, at, us / 1000)
  const frac = us % 1000
  at = putNumber(buf, at, (us - frac) / 1000)
  buf[at] = 0x2e // .
  return putThreeDigits(buf, at + 1, frac)
}

function openAppend(path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    openFd(path, 'a', 0o640, (err, fd) => err ? reject(err) : resolve(fd))
  })
}

function closeQuietly(fd: number): void {
  if (fd !== STDOUT) closeFd(fd, () => {})
}
