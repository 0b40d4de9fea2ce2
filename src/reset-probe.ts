// libuv reports a TCP reset that arrives right behind the last bytes as a clean end of stream
// (uv__stream_io takes POLLHUP after a partial read for EOF), so 'end' alone cannot tell a
// peer's FIN from its reset. An empty write can: it fails on a connection the peer reset.

import type { Writable } from 'node:stream'

const EMPTY = Buffer.alloc(0)

/**
 * For a socket that just ended and can still be written (half-open): calls `then(true)` when
 * the peer reset the connection, `then(false)` when it closed its side cleanly.
 */
export function probeEndForReset(socket: Writable, then: (reset: boolean) => void): void {
  socket.write(EMPTY, (err) => then(err != null))
}
