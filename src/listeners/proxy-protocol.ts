// The PROXY protocol (v1 text and v2 binary, haproxy.org/download/2.6/doc/proxy-protocol.txt):
// a load balancer in front of the gateway prefixes each connection with the client's real
// address. Parsed strictly and bounded: a header that is not complete and well-formed closes
// the connection, since nothing after a bad one can be trusted to be where it seems.

import { BlockList, SocketAddress, isIPv4, isIPv6, type Socket } from 'node:net'

export type ProxyHeaderResult =
  | { readonly kind: 'incomplete' }
  | { readonly kind: 'invalid'; readonly message: string }
  /** `length`: the header's bytes (the rest is payload); `source` null: use the peer's address. */
  | { readonly kind: 'ok'; readonly length: number; readonly source: ProxySource | null }

export interface ProxySource {
  readonly address: string
  readonly port: number
}

const V1_PREFIX = Buffer.from('PROXY ', 'latin1')
/** v1 lines are at most 107 bytes with the CRLF (the spec's worst case, TCP6 with full addresses). */
const V1_MAX = 107
const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a])
/** Bytes after the 16-byte v2 header: the addresses and TLVs (balancers send a few dozen). */
export const V2_MAX_PAYLOAD = 4096

const INCOMPLETE: ProxyHeaderResult = { kind: 'incomplete' }

function invalid(message: string): ProxyHeaderResult {
  return { kind: 'invalid', message }
}

export function parseProxyHeader(buf: Buffer): ProxyHeaderResult {
  if (buf.length === 0) return INCOMPLETE
  if (buf[0] === V2_SIGNATURE[0]) return parseV2(buf)
  if (buf[0] === V1_PREFIX[0]) return parseV1(buf)
  return invalid('the connection does not start with a PROXY protocol header')
}

function startsLike(buf: Buffer, prefix: Buffer): boolean {
  const n = Math.min(buf.length, prefix.length)
  return buf.subarray(0, n).equals(prefix.subarray(0, n))
}

function parseV1(buf: Buffer): ProxyHeaderResult {
  if (!startsLike(buf, V1_PREFIX)) return invalid('the connection does not start with a PROXY protocol header')
  const lf = buf.indexOf(0x0a)
  if (lf === -1) return buf.length >= V1_MAX ? invalid(`a PROXY v1 line over ${V1_MAX} bytes`) : INCOMPLETE
  if (lf + 1 > V1_MAX) return invalid(`a PROXY v1 line over ${V1_MAX} bytes`)
  if (buf[lf - 1] !== 0x0d) return invalid('a PROXY v1 line ending in a bare LF')
  const line = buf.toString('latin1', V1_PREFIX.length, lf - 1)
  if (line === 'UNKNOWN' || line.startsWith('UNKNOWN ')) return { kind: 'ok', length: lf + 1, source: null }
  const fields = line.split(' ')
  if (fields.length !== 5) return invalid('a PROXY v1 line without exactly a protocol, two addresses and two ports')
  const [proto, src, dst, srcPort, dstPort] = fields
  // No zone ids ("fe80::1%eth0"): node's isIPv6 takes them, a client address has none.
  const valid = proto === 'TCP4' ? isIPv4 : proto === 'TCP6' ? (a: string) => isIPv6(a) && !a.includes('%') : null
  if (valid === null) return invalid(`a PROXY v1 protocol ${JSON.stringify(proto.slice(0, 16))} (TCP4, TCP6 or UNKNOWN)`)
  if (!valid(src) || !valid(dst)) return invalid(`a PROXY v1 address that is not ${proto === 'TCP4' ? 'IPv4' : 'IPv6'}`)
  const port = v1Port(srcPort)
  if (port < 0 || v1Port(dstPort) < 0) return invalid('a PROXY v1 port that is not a number from 0 to 65535')
  return { kind: 'ok', length: lf + 1, source: { address: proto === 'TCP6' ? canonicalIPv6(src) : src, port } }
}

/** A decimal port without sign or leading zeros, or -1. */
function v1Port(s: string): number {
  if (!/^(0|[1-9][0-9]{0,4})$/.test(s)) return -1
  const n = Number(s)
  return n <= 65535 ? n : -1
}

function parseV2(buf: Buffer): ProxyHeaderResult {
  if (!startsLike(buf, V2_SIGNATURE)) return invalid('the connection does not start with a PROXY protocol header')
  if (buf.length < 16) return INCOMPLETE
  const version = buf[12] >> 4
  const command = buf[12] & 0x0f
  if (version !== 2) return invalid(`PROXY protocol version ${version} (only 2 has a binary header)`)
  if (command > 1) return invalid(`an unknown PROXY v2 command ${command}`)
  const family = buf[13]
  const rest = buf.readUInt16BE(14)
  if (rest > V2_MAX_PAYLOAD) return invalid(`a PROXY v2 header with ${rest} bytes of addresses and TLVs (at most ${V2_MAX_PAYLOAD})`)
  const length = 16 + rest
  if (command === 0) {
    // LOCAL: the balancer's own connection (a health check); the family is to be ignored.
    return buf.length < length ? INCOMPLETE : { kind: 'ok', length, source: null }
  }
  let source: ProxySource | null
  switch (family) {
    case 0x00: // UNSPEC
      source = null
      if (buf.length < length) return INCOMPLETE
      break
    case 0x11: // TCP over IPv4
      if (rest < 12) return invalid('a PROXY v2 TCP4 header too short for its addresses')
      if (buf.length < length) return INCOMPLETE
      source = { address: `${buf[16]}.${buf[17]}.${buf[18]}.${buf[19]}`, port: buf.readUInt16BE(24) }
      break
    case 0x21: // TCP over IPv6
      if (rest < 36) return invalid('a PROXY v2 TCP6 header too short for its addresses')
      if (buf.length < length) return INCOMPLETE
      source = { address: bytesToIPv6(buf.subarray(16, 32)), port: buf.readUInt16BE(48) }
      break
    default:
      return invalid(`a PROXY v2 address family and protocol 0x${family.toString(16).padStart(2, '0')} (only TCP over IPv4 or IPv6, or UNSPEC)`)
  }
  return { kind: 'ok', length, source }
}

/** An IPv6 address as node writes remote addresses (RFC 5952: lower case, zeros compressed). */
function canonicalIPv6(address: string): string {
  return new SocketAddress({ address, family: 'ipv6' }).address
}

function bytesToIPv6(b: Buffer): string {
  const words: string[] = []
  for (let i = 0; i < 16; i += 2) words.push(b.readUInt16BE(i).toString(16))
  return canonicalIPv6(words.join(':'))
}

/** The addresses and ranges of `trustedProxies` ("10.0.0.0/8", "::1"), validated before. */
export function trustList(entries: readonly string[]): BlockList {
  const list = new BlockList()
  for (const entry of entries) {
    const slash = entry.indexOf('/')
    const address = slash === -1 ? entry : entry.slice(0, slash)
    const type = isIPv4(address) ? 'ipv4' : 'ipv6'
    if (slash === -1) list.addAddress(address, type)
    else list.addSubnet(address, Number(entry.slice(slash + 1)), type)
  }
  return list
}

/**
 * Reads the PROXY header off `socket` within `timeoutMs`, then calls `onHeader` with the
 * client's address (the peer's own for LOCAL and UNKNOWN); the bytes after the header stay in
 * the socket, unread, for whoever takes it next (the HTTP parser, or node's TLS layer, which
 * reads what a socket has buffered when it wraps it). On a bad, slow or missing header it
 * calls `onFail` and destroys the socket: no answer, as HAProxy gives none.
 */
export function readProxyHeader(
  socket: Socket, timeoutMs: number,
  onHeader: (clientAddress: string) => void, onFail: (message: string) => void,
): void {
  let buf: Buffer | null = null
  let settled = false
  const settle = (): void => {
    settled = true
    clearTimeout(timer)
    socket.off('readable', onReadable)
    socket.off('end', onEnd)
    socket.off('error', onError)
    socket.off('close', onClose)
  }
  const fail = (message: string): void => {
    if (settled) return
    settle()
    socket.destroy()
    onFail(message)
  }
  const onEnd = (): void => fail('the connection closed before its PROXY header was complete')
  const onError = (): void => fail('the connection failed before its PROXY header was complete')
  // Closed from this side (shutdown, a reload that rebinds): nothing to report, nothing to wait for.
  const onClose = (): void => { if (!settled) settle() }
  const onReadable = (): void => {
    let chunk: Buffer | null
    while (!settled && (chunk = socket.read() as Buffer | null) !== null) {
      buf = buf === null ? chunk : Buffer.concat([buf, chunk])
      const result = parseProxyHeader(buf)
      if (result.kind === 'incomplete') continue
      if (result.kind === 'invalid') {
        fail(result.message)
        return
      }
      settle()
      if (result.length < buf.length) socket.unshift(buf.subarray(result.length))
      onHeader(result.source?.address ?? socket.remoteAddress ?? 'unknown')
    }
  }
  const timer = setTimeout(() => fail(`no whole PROXY header within ${timeoutMs} ms`), timeoutMs)
  socket.on('readable', onReadable)
  socket.on('end', onEnd)
  socket.on('error', onError)
  socket.on('close', onClose)
}
