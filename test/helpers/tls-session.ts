// A TLS client that carries its session from one connection to the next, as a browser does,
// to see whether the gateway resumes it (RFC 5077 tickets in TLS 1.2, RFC 8446 4.6.1 in 1.3).

import tls from 'node:tls'

export interface Visit {
  /** The server accepted the session offered (an abbreviated handshake). */
  reused: boolean
  /** The session to offer next: the newest one the server issued, else the one offered. */
  session: Buffer | undefined
  /** The status of the GET sent on the connection. */
  status: number
}

/**
 * One connection to 127.0.0.1:`port` offering `session`: a GET with `Connection: close`,
 * read to the end. By then the server's tickets have arrived (a TLS 1.3 server sends them
 * right after the handshake, before any data), so the newest one is what `session` holds.
 */
export function visit(port: number, options: { session?: Buffer; servername?: string; maxVersion?: tls.SecureVersion } = {}): Promise<Visit> {
  return new Promise((resolve, reject) => {
    let session = options.session
    let reused = false
    let data = ''
    const socket = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...options }, () => {
      reused = socket.isSessionReused()
      socket.write(`GET /x HTTP/1.1\r\nHost: ${options.servername ?? 'localhost'}\r\nConnection: close\r\n\r\n`)
    })
    socket.on('session', (s: Buffer) => { session = s })
    socket.setEncoding('latin1')
    socket.on('data', (d: string) => { data += d })
    socket.on('error', reject)
    socket.on('close', () => resolve({ reused, session, status: Number(data.split(' ')[1]) }))
  })
}
