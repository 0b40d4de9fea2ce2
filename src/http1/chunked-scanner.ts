// Walks a chunked body (RFC 9112 section 7.1) as it streams through, without decoding it:
// the bytes are forwarded unchanged, the scanner only finds where the body ends, counts the
// payload (for limits.maxBodyBytes) and refuses anything malformed. Data bytes are skipped
// by arithmetic, so the per-byte work is limited to size lines and trailers.

import { FIELD_VALUE, TOKEN } from './syntax.js'

const enum S { Size, SizeExt, SizeLf, Data, DataCr, DataLf, TrailerStart, TrailerName, TrailerValue, TrailerLf, FinalLf, Done }

const MAX_SIZE_DIGITS = 15
const MAX_EXT_BYTES = 4096

export class ChunkedScanner {
  private state = S.Size
  private digits = 0
  private remaining = 0
  private lineBytes = 0
  /** Sum of chunk sizes seen so far. */
  payload = 0
  /** Set when the input is malformed; the scanner then refuses all further input. */
  error: string | null = null

  /** `noUnderscore` refuses "_" in trailer names, as request heads do (see request-head.ts). */
  constructor(private readonly maxTrailerBytes: number, private readonly noUnderscore = false) {}

  get done(): boolean {
    return this.state === S.Done
  }

  /**
   * Consumes `buf[start..]`. Returns the index just past the end of the body when it ends
   * inside `buf`, -1 when more is needed, or -2 on malformed input (`error` says why).
   */
  scan(buf: Buffer, start: number): number {
    if (this.error !== null) return -2
    let i = start
    const n = buf.length
    while (i < n) {
      switch (this.state) {
        case S.Data: {
          const take = Math.min(this.remaining, n - i)
          this.remaining -= take
          i += take
          if (this.remaining === 0) this.state = S.DataCr
          continue
        }
        case S.Size: {
          const c = buf[i]
          const v = hexValue(c)
          if (v >= 0) {
            if (++this.digits > MAX_SIZE_DIGITS) return this.fail('a chunk size too large')
            this.remaining = this.remaining * 16 + v
          } else if (this.digits === 0) {
            return this.fail('a chunk without a size')
          } else if (c === 0x3b /* ; */) {
            this.state = S.SizeExt
            this.lineBytes = 0
          } else if (c === 13) {
            this.state = S.SizeLf
          } else {
            return this.fail('an invalid character in a chunk size')
          }
          break
        }
        case S.SizeExt: {
          const c = buf[i]
          if (c === 13) this.state = S.SizeLf
          else if ((c < 0x20 && c !== 9) || c === 0x7f) return this.fail('a control character in a chunk extension')
          else if (++this.lineBytes > MAX_EXT_BYTES) return this.fail('a chunk extension too long')
          break
        }
        case S.SizeLf:
          if (buf[i] !== 10) return this.fail('a chunk size line not ended by CRLF')
          this.digits = 0
          if (this.remaining === 0) {
            this.state = S.TrailerStart
            this.lineBytes = 0
          } else {
            this.payload += this.remaining
            this.state = S.Data
          }
          break
        case S.DataCr:
          if (buf[i] !== 13) return this.fail('chunk data longer than its size')
          this.state = S.DataLf
          break
        case S.DataLf:
          if (buf[i] !== 10) return this.fail('chunk data not ended by CRLF')
          this.state = S.Size
          break
        case S.TrailerStart: {
          const c = buf[i]
          if (c === 13) { this.state = S.FinalLf; break }
          // RFC 9112 section 7.1.2: trailers are field lines. Anything else (a line without a
          // colon, obs-fold, an empty name, control characters) is refused as in a head: a
          // request line taken for a "trailer" here is a request smuggled past any parser that
          // ends the body differently.
          if (TOKEN[c] === 0) return this.fail('a malformed trailer line')
          this.state = S.TrailerName
          continue
        }
        case S.TrailerName: {
          const c = buf[i]
          if (c === 0x3a /* : */) this.state = S.TrailerValue
          else if (TOKEN[c] === 0 || (c === 0x5f && this.noUnderscore)) return this.fail('a malformed trailer field name')
          if (++this.lineBytes > this.maxTrailerBytes) return this.fail('trailers too large')
          break
        }
        case S.TrailerValue: {
          const c = buf[i]
          if (c === 13) this.state = S.TrailerLf
          else if (FIELD_VALUE[c] === 0) return this.fail('a control character in a trailer field')
          if (++this.lineBytes > this.maxTrailerBytes) return this.fail('trailers too large')
          break
        }
        case S.TrailerLf:
          if (buf[i] !== 10) return this.fail('a trailer line not ended by CRLF')
          this.state = S.TrailerStart
          break
        case S.FinalLf:
          if (buf[i] !== 10) return this.fail('the last chunk not ended by CRLF')
          this.state = S.Done
          return i + 1
        case S.Done:
          return i
      }
      i++
    }
    return -1
  }

  private fail(why: string): number {
    this.error = why
    this.state = S.Done
    return -2
  }
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30
  if (c >= 0x61 && c <= 0x66) return c - 0x57
  if (c >= 0x41 && c <= 0x46) return c - 0x37
  return -1
}
