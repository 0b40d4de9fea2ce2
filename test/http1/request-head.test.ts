import { describe, expect, it } from 'vitest'
import { HeadError } from '../../src/http1/head-error.js'
import { parseRequestHead } from '../../src/http1/request-head.js'

const parse = (head: string) => parseRequestHead(head, 100)
const kindOf = (head: string): string => {
  try {
    parse(head)
    return 'ok'
  } catch (err) {
    return (err as HeadError).kind
  }
}

describe('request head parser', () => {
  it('reads method, target, version and keeps header case and order', () => {
    const h = parse('POST /a/b?c=d HTTP/1.1\r\nHost: Example.com\r\nX-CSRF-Token: t\r\nContent-Length: 5')
    expect(h.method).toBe('POST')
    expect(h.target).toBe('/a/b?c=d')
    expect(h.path).toBe('/a/b')
    expect(h.minor).toBe(1)
    expect(h.headers).toEqual(['Host', 'Example.com', 'X-CSRF-Token', 't', 'Content-Length', '5'])
    expect(h.contentLength).toBe(5)
    expect(h.keepAlive).toBe(true)
  })

  it.each([
    ['CL with TE', 'POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked'],
    ['duplicate CL', 'POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 3'],
    ['CL with a sign', 'POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +3'],
    ['CL list', 'POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 3'],
    ['TE ,chunked', 'POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: ,chunked'],
    ['TE chunked, identity', 'POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, identity'],
    ['TE gzip, chunked', 'POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked'],
    ['TE twice', 'POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked'],
    ['obs-fold', 'GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n  2'],
    ['bare LF', 'GET / HTTP/1.1\nHost: h'],
    ['bare CR', 'GET / HTTP/1.1\r\nHost: h\rX: y'],
    ['bare CR ending the head', 'GET / HTTP/1.1\r\nHost: h\r\nX: y\r'],
    ['bare CR in the request line', 'GET / HTTP/1.1\rHost: h'],
    ['DEL in a value', 'GET / HTTP/1.1\r\nHost: h\r\nX-A: a\u007fb'],
    ['a control character in a name', 'GET / HTTP/1.1\r\nHost: h\r\nX\u0001A: 1'],
    ['duplicate Host', 'GET / HTTP/1.1\r\nHost: a\r\nHost: a'],
    ['missing Host', 'GET / HTTP/1.1\r\nX: y'],
    ['authority differs from Host', 'GET http://a.example/x HTTP/1.1\r\nHost: b.example'],
    ['* outside OPTIONS', 'GET * HTTP/1.1\r\nHost: h'],
    ['HTTP/0.9', 'GET /'],
    ['HTTP/2.0', 'GET / HTTP/2.0\r\nHost: h'],
    ['HTTP/1.2', 'GET / HTTP/1.2\r\nHost: h'],
    ['upgrade with a body', 'GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nContent-Length: 2'],
    ['underscore in a name', 'GET / HTTP/1.1\r\nHost: h\r\nX_Forwarded_For: 1.2.3.4'],
    ['space before colon', 'GET / HTTP/1.1\r\nHost: h\r\nX-A : 1'],
    ['NUL in a value', 'GET / HTTP/1.1\r\nHost: h\r\nX-A: a\u0000b'],
    ['space in the target', 'GET /a b HTTP/1.1\r\nHost: h'],
    ['a fragment in the target', 'GET /a#b HTTP/1.1\r\nHost: h'],
    ['a fragment in an absolute-form target', 'GET http://h#frag HTTP/1.1\r\nHost: h'],
    ['CONNECT', 'CONNECT a:443 HTTP/1.1\r\nHost: a:443'],
  ])('refuses %s', (_name, head) => {
    expect(kindOf(head)).toBe('malformed')
  })

  it('reads the bytes it is given, which may run on past the head into the body', () => {
    const s = 'POST /u HTTP/1.1\r\nHost: h\r\nX-Trail:  v \t\r\nContent-Length: 4'
    const h = parseRequestHead(s, 100, Buffer.from(`${s}\r\n\r\nbody`, 'latin1'))
    expect(h.headers).toEqual(['Host', 'h', 'X-Trail', 'v', 'Content-Length', '4'])
    expect(h.lowerNames).toEqual(['host', 'x-trail', 'content-length'])
  })

  it('answers too many fields as too large', () => {
    const head = 'GET / HTTP/1.1\r\nHost: h' + '\r\nX-A: 1'.repeat(100)
    expect(kindOf(head)).toBe('too_large')
  })

  it('reduces an absolute-form target that agrees with Host to origin-form', () => {
    const h = parse('GET http://Example.com:8080/p?q HTTP/1.1\r\nHost: example.com:8080')
    expect(h.target).toBe('/p?q')
    expect(h.authority).toBe('Example.com:8080')
  })

  it('accepts OPTIONS * and HTTP/1.0 without Host', () => {
    expect(kindOf('OPTIONS * HTTP/1.1\r\nHost: h')).toBe('ok')
    const h = parse('GET / HTTP/1.0')
    expect(h.minor).toBe(0)
    expect(h.keepAlive).toBe(false)
  })

  it('recognises a websocket upgrade and its key', () => {
    const h = parse('GET /pty HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13')
    expect(h.websocket).toBe(true)
    expect(h.wsKey).toBe('dGhlIHNhbXBsZSBub25jZQ==')
  })

  it('refuses a websocket upgrade with a malformed key', () => {
    expect(kindOf('GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: short')).toBe('malformed')
  })

  it('honours Connection: close', () => {
    expect(parse('GET / HTTP/1.1\r\nHost: h\r\nConnection: close').keepAlive).toBe(false)
  })
})
