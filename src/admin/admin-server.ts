// The admin listener: separate from traffic, loopback by default. Liveness and readiness are
// open; everything else needs the bearer token (see admin handlers).

import http from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Gateway } from '../gateway.js'
import { bindError } from '../listeners/startup-error.js'

export class AdminServer {
  private readonly server: http.Server

  private constructor(private readonly gateway: Gateway) {
    this.server = http.createServer((req, res) => this.handle(req, res))
    this.server.headersTimeout = 10_000
    this.server.requestTimeout = 30_000
  }

  static async start(gateway: Gateway): Promise<AdminServer> {
    const admin = new AdminServer(gateway)
    const { host, port } = gateway.config.admin
    await new Promise<void>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException) => reject(bindError('the admin listener', host, port, err))
      admin.server.once('error', onError)
      admin.server.listen({ host, port }, () => {
        admin.server.off('error', onError)
        resolve()
      })
    })
    return admin
  }

  address(): AddressInfo {
    return this.server.address() as AddressInfo
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://admin')
    if (req.method === 'GET' && url.pathname === '/healthz') {
      send(res, 200, { status: 'ok' })
      return
    }
    if (req.method === 'GET' && url.pathname === '/readyz') {
      const r = this.gateway.readiness()
      send(res, r.ready ? 200 : 503, r)
      return
    }
    send(res, 404, { errors: [{ path: url.pathname, message: 'no such admin endpoint' }] })
  }

  close(): Promise<void> {
    this.server.closeAllConnections()
    return new Promise((resolve) => this.server.close(() => resolve()))
  }
}

function send(res: http.ServerResponse, status: number, body: unknown): void {
  const text = `${JSON.stringify(body)}\n`
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' })
  res.end(text)
}
