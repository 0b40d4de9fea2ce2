// The PROXY protocol header parser (HAProxy's proxy-protocol.txt, v1 text and v2 binary): what
// a valid header yields, that every strict prefix of one asks for more, and that anything that
// can no longer become a header is refused, as early as the bytes allow.

import { describe, expect, it } from 'vitest'
import { parseProxyHeader, type ProxyHeaderResult } from '../../src/listeners/proxy-protocol.js'

// ---- building headers ----------------------------------------------------------------

/** The v2 signature (proxy-protocol.txt section 2.2). */
const SIGNATURE = Buffer.from('0d0a0d0a000d0a515549540a', 'hex')
const LOCAL = 0x20
const PROXY = 0x21
const UNSPEC = 0x00
const TCP4 = 0x11
const TCP6 = 0x21

/** A v2 header: signature, version/command, family/protocol, the length of `rest`, then `rest`. */
function v2(command: number, family: number, rest: Buffer = Buffer.alloc(0), length = rest.length): Buffer {
  const fixed = Buffer.alloc(4)
  fixed[0] = command
  fixed[1] = family
  fixed.writeUInt16BE(length, 2)
  return Buffer.concat([SIGNATURE, fixed, rest])
}

function ports(source: number, destination: number): Buffer {
  const b = Buffer.alloc(4)
  b.writeUInt16BE(source, 0)
  b.writeUInt16BE(destination, 2)
  return b
}

function ipv4Bytes(address: string): Buffer {
  return Buffer.from(address.split('.').map(Number))
}

/** The 16 bytes of an IPv6 address (hex groups, at most one "::"; no embedded IPv4). */
function ipv6Bytes(address: string): Buffer {
  const [head, tail] = address.includes('::') ? address.split('::') : [address, null]
  const left = head === '' ? [] : head.split(':')
  const right = tail === null || tail === '' ? [] : tail.split(':')
  const groups = [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right]
  const b = Buffer.alloc(16)
  groups.forEach((g, i) => b.writeUInt16BE(parseInt(g, 16), i * 2))
  return b
}

function tcp4Block(src: string, dst: string, srcPort: number, dstPort: number): Buffer {
  return Buffer.concat([ipv4Bytes(src), ipv4Bytes(dst), ports(srcPort, dstPort)])
}

function tcp6Block(src: string, dst: string, srcPort: number, dstPort: number): Buffer {
  return Buffer.concat([ipv6Bytes(src), ipv6Bytes(dst), ports(srcPort, dstPort)])
}

/** One TLV (section 2.2.7): type, 2-byte big-endian length, value. */
function tlv(type: number, value: Buffer | string): Buffer {
  const v = typeof value === 'string' ? Buffer.from(value, 'latin1') : value
  const head = Buffer.alloc(3)
  head[0] = type
  head.writeUInt16BE(v.length, 1)
  return Buffer.concat([head, v])
}

const PP2_TYPE_ALPN = 0x01
const PP2_TYPE_AUTHORITY = 0x02
const PP2_TYPE_NOOP = 0x04

const text = (s: string): Buffer => Buffer.from(s, 'latin1')

/** What a test asserts of a result: the contract's fields only (an implementation may add more). */
function summary(r: ProxyHeaderResult): unknown {
  switch (r.kind) {
    case 'ok':
      return { kind: 'ok', length: r.length, source: r.source === null ? null : { address: r.source.address, port: r.source.port } }
    case 'invalid':
      return { kind: 'invalid' }
    default:
      return { kind: r.kind }
  }
}

const ok = (length: number, source: { address: string; port: number } | null) => ({ kind: 'ok', length, source })
const INVALID = { kind: 'invalid' }
const INCOMPLETE = { kind: 'incomplete' }

// ---- valid headers -------------------------------------------------------------------

const V1_TCP4 = 'PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n'
const V1_TCP6 = 'PROXY TCP6 2001:db8::1 2001:db8::2 56324 443\r\n'
const V1_UNKNOWN = 'PROXY UNKNOWN\r\n'
const V1_LONGEST_TCP6 = 'PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n'
/** 107 bytes, CRLF included: the longest v1 header there may be. */
const V1_107 = `PROXY UNKNOWN ${'x'.repeat(107 - 'PROXY UNKNOWN '.length - 2)}\r\n`

const V2_TCP4 = v2(PROXY, TCP4, tcp4Block('192.0.2.1', '198.51.100.2', 56324, 443))
const V2_TCP4_TLVS = v2(PROXY, TCP4, Buffer.concat([
  tcp4Block('192.0.2.1', '198.51.100.2', 56324, 443),
  tlv(PP2_TYPE_ALPN, 'http/1.1'),
  tlv(PP2_TYPE_AUTHORITY, 'ide.example.com'),
  tlv(PP2_TYPE_NOOP, Buffer.alloc(5)),
]))
const V2_TCP6 = v2(PROXY, TCP6, tcp6Block('2001:db8::1', '2001:db8::2', 56324, 443))
const V2_LOCAL = v2(LOCAL, UNSPEC)

describe('parseProxyHeader, v1', () => {
  it('reads a TCP4 header: the source address and port', () => {
    expect(V1_TCP4.length).toBe(45)
    expect(summary(parseProxyHeader(text(V1_TCP4)))).toEqual(ok(45, { address: '192.0.2.1', port: 56324 }))
  })

  it('reads a TCP6 header', () => {
    expect(summary(parseProxyHeader(text(V1_TCP6)))).toEqual(ok(V1_TCP6.length, { address: '2001:db8::1', port: 56324 }))
  })

  it('reads the longest TCP6 header, with the highest ports', () => {
    expect(V1_LONGEST_TCP6.length).toBe(104)
    expect(summary(parseProxyHeader(text(V1_LONGEST_TCP6)))).toEqual(ok(104, { address: 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', port: 65535 }))
  })

  it('takes port 0 as a port', () => {
    const h = 'PROXY TCP4 192.0.2.1 198.51.100.2 0 0\r\n'
    expect(summary(parseProxyHeader(text(h)))).toEqual(ok(h.length, { address: '192.0.2.1', port: 0 }))
  })

  it('reads "PROXY UNKNOWN" as "use the peer address"', () => {
    expect(summary(parseProxyHeader(text(V1_UNKNOWN)))).toEqual(ok(15, null))
  })

  it('ignores whatever follows UNKNOWN, addresses or not', () => {
    for (const h of ['PROXY UNKNOWN 192.0.2.1 198.51.100.2 56324 443\r\n', 'PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n', 'PROXY UNKNOWN anything at all\r\n']) {
      expect(summary(parseProxyHeader(text(h))), h).toEqual(ok(h.length, null))
    }
  })

  it('accepts a header of exactly 107 bytes', () => {
    expect(V1_107.length).toBe(107)
    expect(summary(parseProxyHeader(text(V1_107)))).toEqual(ok(107, null))
  })

  it('gives the header length, leaving what follows (the request) as payload', () => {
    const request = 'GET / HTTP/1.1\r\nHost: h\r\n\r\n'
    expect(summary(parseProxyHeader(text(V1_TCP4 + request)))).toEqual(ok(V1_TCP4.length, { address: '192.0.2.1', port: 56324 }))
    expect(summary(parseProxyHeader(text(V1_UNKNOWN + request)))).toEqual(ok(V1_UNKNOWN.length, null))
    // The payload may itself look like a header: only the first one counts.
    expect(summary(parseProxyHeader(text(V1_TCP4 + V1_TCP6)))).toEqual(ok(V1_TCP4.length, { address: '192.0.2.1', port: 56324 }))
  })
})

describe('parseProxyHeader, v2', () => {
  it('reads a PROXY command over TCP/IPv4: 16 + 12 bytes', () => {
    expect(summary(parseProxyHeader(V2_TCP4))).toEqual(ok(28, { address: '192.0.2.1', port: 56324 }))
  })

  it('skips the TLVs after the addresses', () => {
    expect(summary(parseProxyHeader(V2_TCP4_TLVS))).toEqual(ok(V2_TCP4_TLVS.length, { address: '192.0.2.1', port: 56324 }))
  })

  it('reads a PROXY command over TCP/IPv6: 16 + 36 bytes, the address in compressed lower case', () => {
    expect(summary(parseProxyHeader(V2_TCP6))).toEqual(ok(52, { address: '2001:db8::1', port: 56324 }))
    const full = v2(PROXY, TCP6, tcp6Block('fd00:0:0:0:0:0:abcd:1', '2001:db8::2', 1, 2))
    expect(summary(parseProxyHeader(full))).toEqual(ok(52, { address: 'fd00::abcd:1', port: 1 }))
    const noZeros = v2(PROXY, TCP6, tcp6Block('2001:db8:1:2:3:4:5:6', '2001:db8::2', 65535, 2))
    expect(summary(parseProxyHeader(noZeros))).toEqual(ok(52, { address: '2001:db8:1:2:3:4:5:6', port: 65535 }))
  })

  it('reads an IPv6 header with TLVs', () => {
    const h = v2(PROXY, TCP6, Buffer.concat([tcp6Block('2001:db8::1', '2001:db8::2', 56324, 443), tlv(PP2_TYPE_AUTHORITY, 'ide.example.com')]))
    expect(summary(parseProxyHeader(h))).toEqual(ok(52 + 3 + 15, { address: '2001:db8::1', port: 56324 }))
  })

  it('reads LOCAL (a load balancer health check) as "use the peer address"', () => {
    expect(summary(parseProxyHeader(V2_LOCAL))).toEqual(ok(16, null))
  })

  it('reads LOCAL with an address block as "use the peer address", skipping the block', () => {
    expect(summary(parseProxyHeader(v2(LOCAL, TCP4, tcp4Block('192.0.2.1', '198.51.100.2', 1, 2))))).toEqual(ok(28, null))
    const withTlvs = v2(LOCAL, UNSPEC, tlv(PP2_TYPE_NOOP, 'abc'))
    expect(summary(parseProxyHeader(withTlvs))).toEqual(ok(22, null))
  })

  it('reads a PROXY command with an UNSPEC family as "use the peer address", skipping what it carries', () => {
    expect(summary(parseProxyHeader(v2(PROXY, UNSPEC)))).toEqual(ok(16, null))
    expect(summary(parseProxyHeader(v2(PROXY, UNSPEC, Buffer.from('whatever'))))).toEqual(ok(24, null))
  })

  it('accepts the largest header: 16 + 4096 bytes', () => {
    const rest = Buffer.concat([tcp4Block('192.0.2.1', '198.51.100.2', 56324, 443), tlv(PP2_TYPE_NOOP, Buffer.alloc(4096 - 12 - 3))])
    expect(rest.length).toBe(4096)
    expect(summary(parseProxyHeader(v2(PROXY, TCP4, rest)))).toEqual(ok(16 + 4096, { address: '192.0.2.1', port: 56324 }))
  })

  it('gives the header length, leaving what follows (a request, a TLS ClientHello) as payload', () => {
    const payload = Buffer.from('160301020001', 'hex') // the start of a TLS record
    expect(summary(parseProxyHeader(Buffer.concat([V2_TCP4, payload])))).toEqual(ok(28, { address: '192.0.2.1', port: 56324 }))
    expect(summary(parseProxyHeader(Buffer.concat([V2_LOCAL, text('GET / HTTP/1.1\r\n\r\n')])))).toEqual(ok(16, null))
    expect(summary(parseProxyHeader(Buffer.concat([V2_TCP4_TLVS, V2_TCP6])))).toEqual(ok(V2_TCP4_TLVS.length, { address: '192.0.2.1', port: 56324 }))
  })
})

describe('parseProxyHeader, incomplete headers', () => {
  const VALID: [string, Buffer][] = [
    ['v1 TCP4', text(V1_TCP4)],
    ['v1 TCP6', text(V1_TCP6)],
    ['v1 UNKNOWN', text(V1_UNKNOWN)],
    ['v1 of 107 bytes', text(V1_107)],
    ['v2 TCP4', V2_TCP4],
    ['v2 TCP4 with TLVs', V2_TCP4_TLVS],
    ['v2 TCP6', V2_TCP6],
    ['v2 LOCAL', V2_LOCAL],
  ]

  it.each(VALID)('asks for more at every strict prefix of a %s header', (_name, header) => {
    for (let n = 0; n < header.length; n++) {
      expect(summary(parseProxyHeader(header.subarray(0, n))), `the first ${n} of ${header.length} bytes`).toEqual(INCOMPLETE)
    }
    expect(parseProxyHeader(header).kind).toBe('ok')
  })

  it('asks for more while a v2 length announces bytes not yet here', () => {
    const h = v2(PROXY, TCP4, tcp4Block('192.0.2.1', '198.51.100.2', 1, 2), 12 + 100)
    expect(summary(parseProxyHeader(h))).toEqual(INCOMPLETE)
    expect(summary(parseProxyHeader(Buffer.concat([h, Buffer.alloc(99)])))).toEqual(INCOMPLETE)
    expect(summary(parseProxyHeader(Buffer.concat([h, tlv(PP2_TYPE_NOOP, Buffer.alloc(97))])))).toEqual(ok(128, { address: '192.0.2.1', port: 1 }))
  })
})

describe('parseProxyHeader, invalid headers', () => {
  const V1_INVALID: [string, string][] = [
    ['TCP4 with an IPv6 source', 'PROXY TCP4 2001:db8::1 198.51.100.2 56324 443\r\n'],
    ['TCP4 with an IPv6 destination', 'PROXY TCP4 192.0.2.1 2001:db8::2 56324 443\r\n'],
    ['TCP6 with IPv4 addresses', 'PROXY TCP6 192.0.2.1 198.51.100.2 56324 443\r\n'],
    ['an IPv4 octet over 255', 'PROXY TCP4 192.0.2.256 198.51.100.2 56324 443\r\n'],
    ['an IPv4 address of three octets', 'PROXY TCP4 192.0.2 198.51.100.2 56324 443\r\n'],
    ['a host name for an address', 'PROXY TCP4 localhost 198.51.100.2 56324 443\r\n'],
    ['an IPv6 address with two "::"', 'PROXY TCP6 2001::db8::1 2001:db8::2 56324 443\r\n'],
    ['source port 65536', 'PROXY TCP4 192.0.2.1 198.51.100.2 65536 443\r\n'],
    ['destination port 65536', 'PROXY TCP4 192.0.2.1 198.51.100.2 56324 65536\r\n'],
    ['a negative port', 'PROXY TCP4 192.0.2.1 198.51.100.2 -1 443\r\n'],
    ['a port with a letter', 'PROXY TCP4 192.0.2.1 198.51.100.2 5632a 443\r\n'],
    ['a hexadecimal port', 'PROXY TCP4 192.0.2.1 198.51.100.2 0x50 443\r\n'],
    ['a missing destination port', 'PROXY TCP4 192.0.2.1 198.51.100.2 56324\r\n'],
    ['only the family', 'PROXY TCP4\r\n'],
    ['no family', 'PROXY\r\n'],
    ['an extra field', 'PROXY TCP4 192.0.2.1 198.51.100.2 56324 443 1\r\n'],
    ['two spaces between fields', 'PROXY TCP4  192.0.2.1 198.51.100.2 56324 443\r\n'],
    ['a trailing space', 'PROXY TCP4 192.0.2.1 198.51.100.2 56324 443 \r\n'],
    ['an unknown family', 'PROXY TCP5 192.0.2.1 198.51.100.2 56324 443\r\n'],
    ['UDP4', 'PROXY UDP4 192.0.2.1 198.51.100.2 56324 443\r\n'],
    ['a bare LF', 'PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\n'],
    ['UNKNOWN ended by a bare LF', 'PROXY UNKNOWN\n'],
    ['a CR not followed by LF', 'PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\rX\r\n'],
    ['no space after PROXY', 'PROXYTCP4 192.0.2.1 198.51.100.2 56324 443\r\n'],
    ['108 bytes, CRLF included', `PROXY UNKNOWN ${'x'.repeat(108 - 'PROXY UNKNOWN '.length - 2)}\r\n`],
    ['108 bytes and still no CRLF', `PROXY UNKNOWN ${'x'.repeat(108 - 'PROXY UNKNOWN '.length)}`],
    ['a misspelt "PROXY"', 'PROXZ TCP4 192.0.2.1 198.51.100.2 56324 443\r\n'],
    ['a request line instead of a header', 'GET / HTTP/1.1\r\n'],
  ]

  it.each(V1_INVALID)('refuses a v1 header with %s', (_name, header) => {
    // The contract: refused by the first CRLF or by 107 bytes at the latest. (A bare LF alone
    // may be refused sooner; it need not be.)
    if (header.includes('\r\n') || header.length >= 107) expect(summary(parseProxyHeader(text(header)))).toEqual(INVALID)
    // More bytes never make it valid.
    expect(summary(parseProxyHeader(text(`${header}GET / HTTP/1.1\r\nHost: h\r\n\r\n`)))).toEqual(INVALID)
  })

  it('refuses bytes that cannot become "PROXY " before a line end comes', () => {
    // A TLS record header (a ClientHello with no PROXY header before it) is the last one.
    for (const start of ['PROXZ', 'GET /', 'proxy', '\x16\x03\x01\x02\x00']) {
      expect(summary(parseProxyHeader(text(start))), JSON.stringify(start)).toEqual(INVALID)
    }
  })

  const TCP4_BLOCK = tcp4Block('192.0.2.1', '198.51.100.2', 56324, 443)
  const TCP6_BLOCK = tcp6Block('2001:db8::1', '2001:db8::2', 56324, 443)
  const badSignature = Buffer.from(V2_TCP4)
  badSignature[11] = 0x0b

  const V2_INVALID: [string, Buffer][] = [
    ['a wrong byte in the signature', badSignature],
    ['version 1', v2(0x11, TCP4, TCP4_BLOCK)],
    ['version 3', v2(0x31, TCP4, TCP4_BLOCK)],
    ['version 0 (a LOCAL command without version)', v2(0x00, UNSPEC)],
    ['command 2', v2(0x22, TCP4, TCP4_BLOCK)],
    ['command 15', v2(0x2f, TCP4, TCP4_BLOCK)],
    ['UDP over IPv4', v2(PROXY, 0x12, TCP4_BLOCK)],
    ['UDP over IPv6', v2(PROXY, 0x22, TCP6_BLOCK)],
    ['a length too short for IPv4 (11)', v2(PROXY, TCP4, TCP4_BLOCK.subarray(0, 11))],
    ['no address block for IPv4', v2(PROXY, TCP4)],
    ['a length too short for IPv6 (35)', v2(PROXY, TCP6, TCP6_BLOCK.subarray(0, 35))],
    ['an IPv4-sized block for IPv6', v2(PROXY, TCP6, TCP4_BLOCK)],
    ['a length over 4096', v2(PROXY, TCP4, Buffer.concat([TCP4_BLOCK, tlv(PP2_TYPE_NOOP, Buffer.alloc(4097 - 12 - 3))]))],
  ]

  it.each(V2_INVALID)('refuses a v2 header with %s', (_name, header) => {
    expect(summary(parseProxyHeader(header))).toEqual(INVALID)
    expect(summary(parseProxyHeader(Buffer.concat([header, text('GET / HTTP/1.1\r\nHost: h\r\n\r\n')])))).toEqual(INVALID)
  })

  it.each(V2_INVALID)('refuses a v2 header with %s once its first 16 bytes are in', (_name, header) => {
    expect(summary(parseProxyHeader(header.subarray(0, 16)))).toEqual(INVALID)
  })

  it('refuses bytes that start like the v2 signature and then differ, by 16 bytes at the latest', () => {
    const diverging = Buffer.concat([SIGNATURE.subarray(0, 6), text('GET / HTTP/1.1')])
    expect(summary(parseProxyHeader(diverging.subarray(0, 16)))).toEqual(INVALID)
    // "\r\n\r\n" then a request: what a client sending blank lines first would look like.
    expect(summary(parseProxyHeader(text('\r\n\r\nGET / HTTP/1.1\r\n')))).toEqual(INVALID)
  })

  it('says why, in a message', () => {
    const r = parseProxyHeader(text('PROXY TCP4 192.0.2.1 198.51.100.2 65536 443\r\n'))
    expect(r.kind).toBe('invalid')
    if (r.kind === 'invalid') expect(r.message).toEqual(expect.any(String))
    if (r.kind === 'invalid') expect(r.message.length).toBeGreaterThan(0)
  })
})
