// The node-http-proxy reference, in its own process: node:http and node:https front servers
// and one `http-proxy` instance forwarding to the upstream through a keep-alive agent.
// Configured to be fair, i.e. to do what HAProxy and the gateway do:
// - a keep-alive agent (http-proxy's default opens a new upstream connection per request);
// - `xfwd` adds X-Forwarded-For/Port/Proto/Host;
// - `Connection` and `Keep-Alive` are hop-by-hop (RFC 9110 7.6.1) but http-proxy copies
//   them both ways: the client's `Connection: close` would close the pooled upstream socket
//   after every request, and the upstream's `Connection: keep-alive` would override the
//   client's `close`. Both are dropped, so each side's connection follows its own peer.
// With `agent: 'default'` (get-fast-upstream's second http-proxy row) it runs as the package
// comes instead, still with `xfwd`: no agent, so a new upstream connection per request with
// `Connection: close`, and no hop-by-hop fix, so the upstream's answering `Connection: close`
// reaches the client and ends its connection too: what a plain `createProxyServer({ target })`
// does.
// Reports its ports over IPC and exits when the runner disconnects.
import { readFileSync } from 'node:fs'
import { Agent, createServer, type ClientRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { createServer as createHttpsServer } from 'node:https'
import type { AddressInfo, Socket } from 'node:net'
import httpProxy from 'http-proxy'
import type { HttpProxyAgent } from './target.js'

export interface HttpProxyArgs {
  readonly upstreamPort: number
  readonly agent: HttpProxyAgent
  readonly cert: string
  readonly key: string
}

export interface HttpProxyReady {
  readonly type: 'ready'
  readonly httpPort: number
  readonly httpsPort: number
}

const args = JSON.parse(process.argv[2] ?? '{}') as HttpProxyArgs
const keepAlive = args.agent !== 'default'
const agent = keepAlive ? new Agent({ keepAlive: true, maxFreeSockets: 1024, keepAliveMsecs: 10_000 }) : undefined
const proxy = httpProxy.createProxyServer({ target: `http://127.0.0.1:${args.upstreamPort}`, agent, xfwd: true, ws: true })

if (keepAlive) {
  proxy.on('proxyReq', (proxyReq: ClientRequest) => {
    proxyReq.removeHeader('connection')
  })
  proxy.on('proxyRes', (proxyRes: IncomingMessage) => {
    delete proxyRes.headers.connection
    delete proxyRes.headers['keep-alive']
  })
}
proxy.on('error', (_err: Error, _req: IncomingMessage, resOrSocket: ServerResponse | Socket) => {
  if ('writeHead' in resOrSocket) {
    if (!resOrSocket.headersSent) resOrSocket.writeHead(502, { 'content-type': 'text/plain' })
    resOrSocket.end('bad gateway\n')
  } else {
    resOrSocket.destroy()
  }
})

function serve(server: Server): void {
  server.keepAliveTimeout = 60_000
  server.headersTimeout = 65_000
  server.requestTimeout = 0
  server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    socket.on('error', () => socket.destroy())
    proxy.ws(req, socket, head)
  })
}

function listen(server: Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', 4096, () => resolve((server.address() as AddressInfo).port)))
}

function forward(req: IncomingMessage, res: ServerResponse): void {
  proxy.web(req, res)
}

const http = createServer(forward)
const https = createHttpsServer({ cert: readFileSync(args.cert), key: readFileSync(args.key) }, forward)
https.on('tlsClientError', () => {})
serve(http)
serve(https)

const ready: HttpProxyReady = { type: 'ready', httpPort: await listen(http), httpsPort: await listen(https) }
process.send?.(ready)
process.once('disconnect', () => process.exit(0))
