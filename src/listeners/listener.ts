// A front listener: a plain TCP or TLS server whose connections become ClientConnections.
// Node's HTTP server is not used: the gateway parses HTTP/1.1 itself (http1/), which is both
// stricter and faster for a proxy that forwards bytes it does not need to interpret.

import net from 'node:net'
import tls from 'node:tls'
import type { ListenerConfig } from '../config/types.js'
import { GatewayError, renderError } from '../errors.js'
import { gatewayEvent } from '../observability/channels.js'
import { ClientConnection, type ListenerContext } from './client-connection.js'
import type { Engine } from './engine.js'
import { readProxyHeader, trustList } from './proxy-protocol.js'
import { bindError } from './startup-error.js'
import type { TlsContexts } from './tls-contexts.js'

export class Listener {
  readonly ctx: ListenerContext
  /** Makes ClientConnections of the connections it is given (TLS: once their handshake is done). */
  private readonly server: net.Server
  /** The socket that listens: `server`, or with `proxyProtocol` one that reads the header first. */
  private readonly front: net.Server
  /** With `proxyProtocol`: who may connect (and must send the header); else null. */
  private trusted: net.BlockList | null
  /** With `proxyProtocol`: TCP sockets whose header has not come in yet. */
  private readonly awaitingHeader = new Set<net.Socket>()
  /** With `proxyProtocol`: the client address each TCP socket's header named. */
  private readonly proxiedFrom = new WeakMap<net.Socket, string>()
  /** TLS only: raw sockets whose handshake has not completed. */
  private readonly handshaking = new Set<net.Socket>()
  /**
   * Connections accepted while a reload that bound this listener is not committed yet: they
   * wait for the routes they were bound for (with workers, up to the primary's answer).
   */
  private held: Set<net.Socket> | null = null
  /** Its config; `adopt` replaces it with settings that need no new socket. */
  private settings: ListenerConfig

  constructor(config: ListenerConfig, engine: Engine, private contexts: TlsContexts | null) {
    this.settings = config
    this.ctx = {
      name: config.name,
      proto: contexts === null ? 'http' : 'https',
      port: config.port,
      workspacesOnly: config.workspacesOnly,
      redirectToHttps: config.redirectToHttps ?? null,
      engine,
      open: 0,
    }
    const onSocket = (socket: net.Socket) => this.accept(socket)
    if (contexts === null) {
      this.server = net.createServer({ allowHalfOpen: true, noDelay: true }, onSocket)
    } else {
      this.server = tls.createServer({
        // Not half-open while shaking hands: a client that sends its FIN then is gone, and is
        // closed at once (node's TLS layer reads the transport, so a listener on the raw
        // socket's 'end' never hears it). `accept` makes the connection half-open once secure.
        allowHalfOpen: false,
        noDelay: true,
        ...contexts.serverOptions,
        // A handshake is a request head of sorts: same deadline (slowloris on TLS).
        handshakeTimeout: engine.settings.timeouts.headersMs,
        SNICallback: (servername, cb) => {
          const c = this.contexts!
          cb(null, c.forServerName(servername) ?? c.defaultContext)
        },
      }, onSocket)
      // Failed handshakes are the client's problem; they must never reach 'error'.
      this.server.on('tlsClientError', (_err, socket) => socket.destroy())
      // Connections still in their handshake belong to no ClientConnection yet: track them so
      // shutdown does not wait for them.
      this.server.on('connection', (raw: net.Socket) => {
        this.handshaking.add(raw)
        raw.once('close', () => this.handshaking.delete(raw))
      })
    }
    const proxy = config.proxyProtocol
    this.trusted = proxy === undefined ? null : trustList(proxy.trustedProxies)
    this.front = proxy === undefined ? this.server : net.createServer({ allowHalfOpen: true, noDelay: true }, (raw) => this.proxied(raw))
    this.front.on('error', (err) => {
      if (gatewayEvent.hasSubscribers) gatewayEvent.publish({ event: 'listener_error', listener: config.name, message: err.message })
    })
  }

  /**
   * A connection to a `proxyProtocol` listener: from a trusted balancer, and its PROXY header
   * first; then it goes on as any other, with the header's client address.
   */
  private proxied(raw: net.Socket): void {
    const peer = raw.remoteAddress ?? ''
    if (!this.trusted!.check(peer, raw.remoteFamily === 'IPv6' ? 'ipv6' : 'ipv4')) {
      raw.destroy()
      this.proxyRefused(peer, 'the peer is not in trustedProxies')
      return
    }
    this.awaitingHeader.add(raw)
    raw.once('close', () => this.awaitingHeader.delete(raw))
    readProxyHeader(raw, this.ctx.engine.settings.timeouts.headersMs, (clientAddress) => {
      this.awaitingHeader.delete(raw)
      this.proxiedFrom.set(raw, clientAddress)
      // node's TLS server wraps it as it wraps the sockets it accepts itself
      if (this.contexts !== null) this.server.emit('connection', raw)
      else this.accept(raw)
    }, (message) => this.proxyRefused(peer, message))
  }

  private proxyRefused(peer: string, message: string): void {
    if (gatewayEvent.hasSubscribers) gatewayEvent.publish({ event: 'proxy_protocol_refused', listener: this.config.name, peer, message })
  }

  get config(): ListenerConfig {
    return this.settings
  }

  /**
   * Settings that need no new socket (same address, same HTTP or HTTPS): taken in place, by
   * the next request on any of its connections.
   */
  adopt(next: ListenerConfig): void {
    this.settings = next
    this.ctx.workspacesOnly = next.workspacesOnly
    if (next.proxyProtocol !== undefined) this.trusted = trustList(next.proxyProtocol.trustedProxies)
    this.ctx.redirectToHttps = next.redirectToHttps ?? null
  }

  /**
   * New certificates for the next handshakes; open connections keep theirs. The ticket keys
   * stay the run's, so sessions issued before still resume.
   */
  setCertificates(contexts: TlsContexts): void {
    if (this.contexts === null) return
    this.contexts = contexts
    ;(this.server as tls.Server).setSecureContext(contexts.serverOptions)
  }

  get tls(): boolean {
    return this.contexts !== null
  }

  get name(): string {
    return this.config.name
  }

  listen(): Promise<void> {
    const { host, port } = this.settings
    return new Promise((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException) => reject(bindError(`listener "${this.config.name}"`, host, port, err))
      this.front.once('error', onError)
      this.front.listen({ host, port, backlog: 4096 }, () => {
        this.front.off('error', onError)
        const addr = this.front.address() as net.AddressInfo
        this.ctx.port = addr.port
        resolve()
      })
    })
  }

  address(): net.AddressInfo {
    return this.front.address() as net.AddressInfo
  }

  /** Until `serve()`, accepted connections wait (a reload bound this listener; see `held`). */
  hold(): void {
    this.held ??= new Set()
  }

  /** Serves the connections held so far, and every next one at once. */
  serve(): void {
    const held = this.held
    this.held = null
    for (const socket of held ?? []) {
      socket.removeListener('error', destroyOnError)
      if (!socket.destroyed) this.accept(socket)
    }
  }

  private accept(socket: net.Socket): void {
    // The TLS socket's transport (node's `_parent`, stable since node 0.11) is done shaking hands.
    const raw = (socket as net.Socket & { _parent?: net.Socket })._parent
    if (raw !== undefined) {
      this.handshaking.delete(raw)
      // From here a client's FIN ends its requests, not the connection: its answers still go out.
      socket.allowHalfOpen = true
    }
    const clientAddress = this.trusted === null ? socket.remoteAddress ?? 'unknown' : this.proxiedFrom.get(raw ?? socket) ?? 'unknown'
    if (this.held !== null) {
      const held = this.held
      held.add(socket)
      socket.on('error', destroyOnError)
      socket.once('close', () => held.delete(socket))
      return
    }
    const engine = this.ctx.engine
    const limits = engine.settings.limits
    // Over capacity: answer instead of silently dropping (the client learns why), and never
    // parse anything from it. Admin and open connections are unaffected.
    let refusal: string | null = null
    let limit = 'maxConnections'
    if (engine.draining) refusal = 'the gateway is shutting down'
    else if (engine.connections.size >= limits.maxConnections) refusal = `${limits.maxConnections} connections open`
    else if (limits.maxConnectionsPerClient > 0 && (engine.perClient.get(clientAddress) ?? 0) >= limits.maxConnectionsPerClient) {
      refusal = `${limits.maxConnectionsPerClient} connections open from ${clientAddress}`
      limit = 'maxConnectionsPerClient'
    }
    if (refusal !== null) {
      this.refuse(socket, refusal, limit, clientAddress)
      return
    }
    new ClientConnection(socket, this.ctx, clientAddress)
  }

  /** Answers 503 over_capacity and closes, without reading anything from the client. */
  private refuse(socket: net.Socket, why: string, limit: string, client: string): void {
    const engine = this.ctx.engine
    socket.on('error', () => socket.destroy())
    if (gatewayEvent.hasSubscribers && !engine.draining) gatewayEvent.publish({ event: 'limit_hit', limit, listener: this.config.name, client })
    engine.refused++
    socket.end(renderError(new GatewayError('over_capacity', why), true))
    // A client that never reads the answer must not hold the socket.
    setTimeout(() => socket.destroy(), 1000).unref()
  }

  /**
   * Gives the port up, so that another listener can bind it, and leaves every connection
   * open; `listen()` takes it back.
   */
  async stopListening(): Promise<void> {
    if (!this.front.listening) return
    this.front.close()
    // libuv closes the listening descriptor at once; one turn lets the close complete.
    await new Promise<void>((resolve) => setImmediate(resolve))
  }

  /**
   * Stops accepting and drops connections still in their TLS handshake or held (no request of
   * theirs is in flight); open connections are left to the caller.
   */
  close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.front.close(() => resolve()))
    for (const raw of this.handshaking) raw.destroy()
    this.handshaking.clear()
    for (const raw of this.awaitingHeader) raw.destroy()
    this.awaitingHeader.clear()
    for (const socket of this.held ?? []) socket.destroy()
    this.held = null
    return closed
  }
}

/** A held connection has no ClientConnection to handle its errors yet. */
function destroyOnError(this: net.Socket): void {
  this.destroy()
}
