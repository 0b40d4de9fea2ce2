import { describe, expect, it } from 'vitest'
import { ChunkedScanner } from '../../src/http1/chunked-scanner.js'

/** Feeds `body` in pieces of `step` bytes; returns the end offset in the whole input, -1 or -2. */
function scanAll(body: string, step = body.length, noUnderscore = false): { end: number; payload: number; error: string | null } {
  const s = new ChunkedScanner(1024, noUnderscore)
  const buf = Buffer.from(body, 'latin1')
  for (let off = 0; off < buf.length; off += step) {
    const piece = buf.subarray(off, Math.min(off + step, buf.length))
    const r = s.scan(piece, 0)
    if (r === -2) return { end: -2, payload: s.payload, error: s.error }
    if (r >= 0) return { end: off + r, payload: s.payload, error: null }
  }
  return { end: -1, payload: s.payload, error: null }
}

describe('chunked scanner', () => {
  const body = '5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n'

  it('finds the end of a chunked body with extensions and trailers, in any split', () => {
    for (const step of [1, 2, 3, 7, body.length]) {
      expect(scanAll(body + 'GET /next', step)).toEqual({ end: body.length, payload: 11, error: null })
    }
  })

  it('needs more input before the last chunk', () => {
    expect(scanAll('5\r\nhel').end).toBe(-1)
  })

  it.each([
    ['a bad hex size', 'zz\r\nhello\r\n0\r\n\r\n'],
    ['data longer than its size', '2\r\nhello\r\n0\r\n\r\n'],
    ['a size line ended by a bare LF', '5\nhello\r\n0\r\n\r\n'],
    ['a size too large', 'fffffffffffffffff\r\n'],
    ['no size', '\r\n'],
  ])('refuses %s', (_name, input) => {
    expect(scanAll(input).end).toBe(-2)
  })

  // RFC 9112 section 7.1.2: trailers are field lines. A parser that ends the body elsewhere
  // would read a request line here as the next request (smuggling).
  it.each([
    ['a request line', '0\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n'],
    ['a line without a colon', '0\r\nxx\r\n\r\n'],
    ['an empty field name', '0\r\n: v\r\n\r\n'],
    ['obs-fold', '0\r\nA: b\r\n c\r\n\r\n'],
    ['a space before the colon', '0\r\nA : b\r\n\r\n'],
    ['a NUL in the value', '0\r\nA: b\x00\r\n\r\n'],
    ['a bare LF', '0\r\nA: b\nC: d\r\n\r\n'],
  ])('refuses a trailer with %s, in any split', (_name, input) => {
    for (const step of [1, 3, input.length]) expect(scanAll(input, step).end).toBe(-2)
  })

  it('refuses "_" in trailer names only when told to (requests)', () => {
    const body = '0\r\nX_Trailer: t\r\n\r\n'
    expect(scanAll(body).end).toBe(body.length)
    expect(scanAll(body, body.length, true).end).toBe(-2)
  })

  it('stays failed after an error', () => {
    const s = new ChunkedScanner(1024)
    expect(s.scan(Buffer.from('x'), 0)).toBe(-2)
    expect(s.scan(Buffer.from('0\r\n\r\n'), 0)).toBe(-2)
  })
})
