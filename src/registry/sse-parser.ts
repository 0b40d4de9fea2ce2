// A bounded text/event-stream parser (WHATWG HTML "Server-sent events", section 9.2.6
// "Event stream interpretation"), fed raw bytes. One instance per connection: a stream that
// breaks mid-event simply never dispatches the partial event.
//
// One deliberate difference from the spec: an event with an `event:` type but no `data:` is
// still dispatched (with empty data), so `event: reset` works whether or not the registry
// adds a data line.

import { RegistryError } from './registry-source.js'

export interface SseMessage {
  /** The last `id:` seen on this stream (it persists across events, as in the spec); null: none. */
  readonly id: string | null
  /** `event:` value; "message" when absent. */
  readonly event: string
  readonly data: string
}

export class SseParser {
  private readonly decoder = new TextDecoder('utf-8')
  private line = ''
  private skipLf = false
  private data = ''
  private hasData = false
  private event = ''
  private lastId: string | null = null

  /**
   * @param maxLineLength longest accepted line (characters); a longer one is a protocol error.
   * @param maxEventLength longest accepted `data` of one event.
   */
  constructor(
    private readonly onMessage: (message: SseMessage) => void,
    private readonly maxLineLength = 64 * 1024,
    private readonly maxEventLength = 1024 * 1024,
  ) {}

  /** Feeds a chunk; throws a RegistryError on a protocol violation (the caller drops the stream). */
  push(chunk: Uint8Array): void {
    const text = this.decoder.decode(chunk, { stream: true })
    let start = 0
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i)
      if (c !== 0x0a && c !== 0x0d) continue
      if (c === 0x0a && this.skipLf && i === start && this.line.length === 0) {
        // the "\n" of a "\r\n" whose "\r" ended the previous chunk or line
        this.skipLf = false
        start = i + 1
        continue
      }
      const line = this.line.length === 0 ? text.slice(start, i) : this.line + text.slice(start, i)
      this.line = ''
      this.checkLength(line.length)
      this.skipLf = c === 0x0d
      start = i + 1
      this.processLine(line)
    }
    if (start < text.length) {
      this.skipLf = false
      this.line += text.slice(start)
      this.checkLength(this.line.length)
    }
  }

  private checkLength(length: number): void {
    if (length > this.maxLineLength) {
      throw new RegistryError(`event stream line longer than ${this.maxLineLength} characters`)
    }
  }

  private processLine(line: string): void {
    if (line.length === 0) {
      this.dispatch()
      return
    }
    if (line.charCodeAt(0) === 0x3a /* : */) return // comment (keepalive)
    const colon = line.indexOf(':')
    let field: string
    let value: string
    if (colon < 0) {
      field = line
      value = ''
    } else {
      field = line.slice(0, colon)
      value = line.charCodeAt(colon + 1) === 0x20 ? line.slice(colon + 2) : line.slice(colon + 1)
    }
    switch (field) {
      case 'data':
        if (this.data.length + value.length > this.maxEventLength) {
          throw new RegistryError(`event data longer than ${this.maxEventLength} characters`)
        }
        this.data = this.hasData ? this.data + '\n' + value : value
        this.hasData = true
        break
      case 'event':
        this.event = value
        break
      case 'id':
        if (!value.includes('\u0000')) this.lastId = value
        break
      default:
        // "retry" and unknown fields are ignored; the client owns its reconnection policy.
        break
    }
  }

  private dispatch(): void {
    const hasData = this.hasData
    const event = this.event
    const data = this.data
    this.data = ''
    this.hasData = false
    this.event = ''
    if (!hasData && event === '') return
    this.onMessage({ id: this.lastId, event: event === '' ? 'message' : event, data })
  }
}
