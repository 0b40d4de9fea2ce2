// The admin listener's two gates: the bearer token (RFC 6750), compared in constant time, and
// the Host header, which must name the admin address itself. The second stops DNS rebinding:
// a web page whose host name is re-pointed at 127.0.0.1 reaches the admin port from the
// operator's browser, but its requests still say `Host: evil.example:9090`.

import { createHash, timingSafeEqual } from 'node:crypto'
import { networkInterfaces } from 'node:os'
import { isIPv6 } from 'node:net'

export class TokenCheck {
  private readonly digest: Buffer

  constructor(token: string) {
    this.digest = sha256(token)
  }

  /**
   * Does this Authorization header carry the token? Both sides are hashed first, so the
   * comparison is over equal-length digests and leaks neither the token nor its length.
   */
  accepts(authorization: string | undefined): 'ok' | 'missing' | 'invalid' {
    if (authorization === undefined) return 'missing'
    const m = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(authorization)
    if (m === null) return 'invalid'
    return timingSafeEqual(sha256(m[1]), this.digest) ? 'ok' : 'invalid'
  }
}

function sha256(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest()
}

/**
 * The Host header values that name the admin listener: loopback spellings and the configured
 * host with the bound port; for a wildcard bind (0.0.0.0, ::) every local interface address
 * too. Port 80 may be left out, as clients do.
 */
export function adminHostNames(configuredHost: string, port: number): Set<string> {
  const hosts = new Set<string>(['127.0.0.1', 'localhost', '[::1]', bracket(configuredHost.toLowerCase())])
  if (configuredHost === '0.0.0.0' || configuredHost === '::') {
    for (const list of Object.values(networkInterfaces())) {
      for (const info of list ?? []) hosts.add(bracket(info.address.toLowerCase()))
    }
  }
  const out = new Set<string>()
  for (const h of hosts) {
    out.add(`${h}:${port}`)
    if (port === 80) out.add(h)
  }
  return out
}

function bracket(host: string): string {
  return isIPv6(host) ? `[${host}]` : host
}
