import { describe, expect, it } from 'vitest'
import { parseRequestHead } from '../../src/http1/request-head.js'
import { parseResponseHead } from '../../src/http1/response-head.js'
import { serializeRequestHead, serializeResponseHead, stripCookies } from '../../src/upstream/forwarded-headers.js'

const ctx = { clientAddress: '10.1.2.3', proto: 'https', port: 443, requestId: 'rid-1', stripCookies: null }

describe('request head rewrite', () => {
  it('drops hop-by-hop fields and those named in Connection, keeps case and framing', () => {
    const head = parseRequestHead('POST /x HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Secret, Content-Length\r\nKeep-Alive: 5\r\nX-Secret: s\r\nTE: trailers\r\nX-CSRF-Token: t\r\nContent-Length: 2', 100)
    const out = serializeRequestHead(head, ctx)
    expect(out).toContain('X-CSRF-Token: t\r\n')
    expect(out).toContain('Content-Length: 2\r\n')
    expect(out).not.toMatch(/keep-alive|X-Secret|TE:/i)
  })

  it('appends to X-Forwarded-For and overrides the client\'s proto, host and port claims', () => {
    const head = parseRequestHead('GET / HTTP/1.1\r\nHost: ide.example.com\r\nX-Forwarded-For: 1.1.1.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Port: 1', 100)
    const out = serializeRequestHead(head, ctx)
    expect(out).toContain('X-Forwarded-For: 1.1.1.1, 10.1.2.3\r\n')
    expect(out).toContain('X-Forwarded-Proto: https\r\n')
    expect(out).toContain('X-Forwarded-Host: ide.example.com\r\n')
    expect(out).toContain('X-Forwarded-Port: 443\r\n')
    expect(out).not.toContain('X-Forwarded-Proto: http\r\n')
    expect(out).toContain('X-Request-Id: rid-1\r\n')
  })

  it('strips only the listed cookies', () => {
    expect(stripCookies('a=1; session-access-key=s; b=2', new Set(['session-access-key']))).toBe('a=1; b=2')
    expect(stripCookies('session-access-key=s', new Set(['session-access-key']))).toBe('')
  })
})

describe('response head rewrite', () => {
  it('drops hop-by-hop fields and adds Connection: close when the gateway will close', () => {
    const head = parseResponseHead('HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nX-Custom-CASE: v\r\nContent-Length: 0', 100)
    const out = serializeResponseHead(head, true)
    expect(out).toBe('HTTP/1.1 200 OK\r\nX-Custom-CASE: v\r\nContent-Length: 0\r\nConnection: close\r\n\r\n')
  })

  it('keeps the handshake fields of a 101', () => {
    const head = parseResponseHead('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x', 100)
    expect(serializeResponseHead(head, false)).toContain('Upgrade: websocket\r\nConnection: Upgrade\r\n')
  })
})
