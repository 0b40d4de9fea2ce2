import { describe, expect, it } from 'vitest'
import { parseResponseHead } from '../../src/http1/response-head.js'

const parse = (head: string) => parseResponseHead(head, 100)

describe('response head parser', () => {
  it('reads status, reason and framing', () => {
    const h = parse('HTTP/1.1 201 Created\r\nContent-Length: 3\r\nX-Custom-CASE: v')
    expect(h.status).toBe(201)
    expect(h.reason).toBe('Created')
    expect(h.contentLength).toBe(3)
    expect(h.headers).toContain('X-Custom-CASE')
  })

  it('accepts a status line without a reason phrase', () => {
    expect(parse('HTTP/1.1 200').status).toBe(200)
    expect(parse('HTTP/1.1 200 ').reason).toBe('')
  })

  it('folds identical Content-Length repeats and refuses different ones', () => {
    expect(parse('HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3').contentLength).toBe(3)
    expect(() => parse('HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4')).toThrow()
  })

  it.each([
    ['not HTTP', 'HTTX/1.1 200 OK'],
    ['a bad status code', 'HTTP/1.1 2x0 OK'],
    ['CL with TE', 'HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked'],
    ['obs-fold', 'HTTP/1.1 200 OK\r\nX-A: 1\r\n 2'],
    ['bare LF', 'HTTP/1.1 200 OK\nX-A: 1'],
    ['bare CR in the status line', 'HTTP/1.1 200 OK\rX-A: 1'],
    ['bare CR ending the head', 'HTTP/1.1 200 OK\r\nX-A: 1\r'],
    ['chunked not last', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip, chunked'],
  ])('refuses %s', (_name, head) => {
    expect(() => parse(head)).toThrow()
  })

  it('reads a body to close when chunked is not the final coding', () => {
    const h = parse('HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip')
    expect(h.untilClose).toBe(true)
    expect(h.keepAlive).toBe(false)
  })

  it('knows when the upstream keeps the connection', () => {
    expect(parse('HTTP/1.1 200 OK\r\nContent-Length: 0').keepAlive).toBe(true)
    expect(parse('HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0').keepAlive).toBe(false)
    expect(parse('HTTP/1.0 200 OK\r\nContent-Length: 0').keepAlive).toBe(false)
  })
})
