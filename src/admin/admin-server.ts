// The admin listener: separate from traffic, loopback by default (contract: "Admin API").
// `/healthz` and `/readyz` are open; everything else passes two gates first (admin-auth.ts):
// the Host header must name this listener (DNS rebinding), and the bearer token must match.
// Reads are GET (and HEAD); changes only PUT, POST and DELETE, so no link or image tag can
// change anything. Route changes and reloads run one at a time, in arrival order: an
// `If-Match` check and the change it guards can never interleave with another change.

import http from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import type { Gateway, ReloadResult } from '../gateway.js'
import { bindError } from '../listeners/startup-error.js'
import { adminHostNames, TokenCheck } from './admin-auth.js'
import { readIgnoredBody, readJson, sendBodyError, sendErrors, sendJson, sendText } from './admin-http.js'
import type { AdminToken } from './admin-token.js'
import { RoutesApi } from './routes-api.js'

/** Largest `POST /cache/purge` body, bytes. */
const SMALL_BODY_BYTES = 64 * 1024

export class AdminServer {
  private readonly server: http.Server
  private tokenCheck: TokenCheck
  private hosts = new Set<string>()
  private changes: Promise<unknown> = Promise.resolve()
  private readonly routesApi: RoutesApi
  /** The exchange each connection is answering (node's parser errors name only the socket). */
  private readonly answering = new WeakMap<Duplex, { req: http.IncomingMessage; res: http.ServerResponse }>()

  private constructor(private readonly gateway: Gateway, token: AdminToken) {
    this.tokenCheck = new TokenCheck(token.token)
    this.routesApi = new RoutesApi(gateway, (fn) => this.serialize(fn))
    // No Host is the Host gate's to refuse (403, in the API's error shape), not node's bare 400.
    this.server = http.createServer({ requireHostHeader: false }, (req, res) => this.handle(req, res))
    this.server.headersTimeout = 10_000
    this.server.requestTimeout = 30_000
    // A client may send its FIN right after its request (`printf ... | nc -N`). By default node
    // then ends the connection at once: a change was made and its answer never sent. Half-open,
    // the answer goes out first, then the connection ends. (Not in node's typings, but read by
    // its HTTP server, lib/_http_server.js; a body cut short by the FIN is still a 400.)
    ;(this.server as http.Server & { httpAllowHalfOpen: boolean }).httpAllowHalfOpen = true
    this.server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => this.refuseMalformed(err, socket))
  }

  static async start(gateway: Gateway, token: AdminToken): Promise<AdminServer> {
    const admin = new AdminServer(gateway, token)
    const { host, port } = gateway.config.admin
    await new Promise<void>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException) => reject(bindError('the admin listener', host, port, err))
      admin.server.once('error', onError)
      admin.server.listen({ host, port }, () => {
        admin.server.off('error', onError)
        resolve()
      })
    })
    admin.hosts = adminHostNames(host, admin.address().port)
    return admin
  }

  address(): AddressInfo {
    return this.server.address() as AddressInfo
  }

  /** A new token for the next requests (reload). */
  setToken(token: AdminToken): void {
    this.tokenCheck = new TokenCheck(token.token)
  }

  /** `gateway.reload()` in turn with route changes (POST /reload and SIGHUP use this). */
  reload(): Promise<ReloadResult> {
    return this.serialize(() => this.gateway.reload())
  }

  /** Runs `fn` after every change queued before it has finished. */
  private serialize<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.changes.then(fn, fn)
    this.changes = run.catch(() => {})
    return run
  }

  /**
   * Bytes node's HTTP parser refused (both Content-Length and chunked, a bad chunk, a body cut
   * short, a head over 16 KiB). Node would answer a bare 400 and drop any answer in progress;
   * here the error has the API's one shape, and a request that had arrived whole before the bad
   * bytes (pipelined junk, a body sent without framing) still gets its own answer, then the
   * connection closes: an answer of 400 to a request whose change was made misleads its client.
   */
  private refuseMalformed(err: NodeJS.ErrnoException, duplex: Duplex): void {
    const socket = duplex as Socket
    const current = this.answering.get(socket)
    if (current !== undefined && current.req.complete) {
      current.res.shouldKeepAlive = false
      current.res.once('finish', () => socket.destroySoon())
      current.res.once('close', () => socket.destroy())
      return
    }
    if (socket.writable && current?.res.headersSent !== true) {
      const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400
      const reason = (err as { reason?: string }).reason ?? err.message
      const body = `${JSON.stringify({ errors: [{ path: '', message: `the request is not valid HTTP/1.1: ${reason} (${err.code ?? 'error'})` }] })}\n`
      socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\ncontent-type: application/json; charset=utf-8\r\n` +
        `content-length: ${Buffer.byteLength(body)}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n${body}`)
      socket.destroySoon()
      return
    }
    socket.destroy()
  }

  close(): Promise<void> {
    this.server.closeAllConnections()
    return new Promise((resolve) => this.server.close(() => resolve()))
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const exchange = { req, res }
    this.answering.set(req.socket, exchange)
    res.on('finish', () => { if (this.answering.get(req.socket) === exchange) this.answering.delete(req.socket) })
    let url: URL
    try {
      url = new URL(req.url ?? '/', 'http://admin')
    } catch {
      sendErrors(res, 400, [{ path: '', message: 'the request target is not a valid path' }])
      return
    }
    const path = url.pathname
    // Open to probes, whatever Host they send: they reveal nothing worth a rebinding attack.
    if (path === '/healthz' || path === '/readyz') {
      if (!allow(req, res, 'GET, HEAD')) return
      if (path === '/healthz') sendJson(res, 200, { status: 'ok' })
      else {
        const r = this.gateway.readiness()
        sendJson(res, r.ready ? 200 : 503, r)
      }
      return
    }
    const host = req.headers.host?.toLowerCase()
    if (host === undefined || !this.hosts.has(host)) {
      sendErrors(res, 403, [{ path: 'Host', message: `the admin API answers only requests addressed to it (${[...this.hosts].slice(0, 4).join(', ')}, ...), got ${JSON.stringify(host ?? null)}` }])
      return
    }
    const auth = this.tokenCheck.accepts(req.headers.authorization)
    if (auth !== 'ok') {
      sendErrors(res, 401, [{ path: 'Authorization', message: auth === 'missing' ? 'a bearer token is required (Authorization: Bearer <admin token>)' : 'the bearer token is wrong' }],
        { 'www-authenticate': auth === 'missing' ? 'Bearer realm="gateway-admin"' : 'Bearer realm="gateway-admin", error="invalid_token"' })
      return
    }
    this.dispatch(req, res, path, url.searchParams).catch((err: unknown) => {
      sendErrors(res, 500, [{ path: '', message: `internal error: ${(err as Error).message}` }])
    })
  }

  private async dispatch(req: http.IncomingMessage, res: http.ServerResponse, path: string, search: URLSearchParams): Promise<void> {
    if (path === '/routes' || path.startsWith('/routes/')) {
      await this.routesApi.handle(req, res, path)
      return
    }
    if (path === '/servers' || path.startsWith('/servers/') || path === '/events') {
      const registry = this.gateway.registry
      if (registry === null) {
        sendErrors(res, 409, [{ path: '', message: `the workspace registry is remote (workspaces.registry.url ${this.gateway.config.workspaces.registry.url}); manage workspace servers there` }])
        return
      }
      if (!registry.handleRegistryRequest(req, res, path, search)) sendErrors(res, 404, [{ path, message: 'no such admin endpoint' }])
      return
    }
    switch (path) {
      case '/cache/purge':
        if (allow(req, res, 'POST')) await this.purge(req, res)
        return
      case '/reload':
        if (allow(req, res, 'POST')) {
          if (!await readIgnoredBody(req, res, SMALL_BODY_BYTES)) return
          const result = await this.reload()
          if (result.ok) sendJson(res, 200, { ok: true, version: this.gateway.version, ...(result.warnings ? { warnings: result.warnings } : {}) })
          else sendErrors(res, 400, result.errors ?? [])
        }
        return
      case '/stats':
        if (allow(req, res, 'GET, HEAD')) sendJson(res, 200, await this.gateway.statsJson())
        return
      case '/metrics':
        if (allow(req, res, 'GET, HEAD')) {
          const text = await this.gateway.metricsText()
          sendText(res, 200, text, 'text/plain; version=0.0.4; charset=utf-8')
        }
        return
    }
    sendErrors(res, 404, [{ path, message: 'no such admin endpoint' }])
  }

  private async purge(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    let body: unknown
    try {
      body = await readJson(req, SMALL_BODY_BYTES, { optional: true })
    } catch (err) {
      sendBodyError(res, err)
      return
    }
    if (body === undefined || (isObject(body) && Object.keys(body).length === 0)) {
      this.gateway.purgeCache()
      sendJson(res, 200, { ok: true, purged: 'all' })
      return
    }
    if (!isObject(body) || typeof body.key !== 'string' || body.key === '' || Object.keys(body).some((k) => k !== 'key')) {
      sendErrors(res, 400, [{ path: '', message: 'the body must be empty or {"key": "<registry key>"}' }])
      return
    }
    const key = body.key.toLowerCase()
    this.gateway.purgeCache(key)
    sendJson(res, 200, { ok: true, purged: key })
  }
}

/** True when the method is one of `methods`; otherwise answers 405 with Allow. */
function allow(req: http.IncomingMessage, res: http.ServerResponse, methods: string): boolean {
  if (methods.split(', ').includes(req.method ?? '')) return true
  sendErrors(res, 405, [{ path: 'method', message: `${req.method} is not allowed here; use ${methods}` }], { allow: methods })
  return false
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}
