// RFC 6455 section 4.2.2: the server proves it read the handshake by answering
// base64(SHA-1(key + GUID)). A tunnel opens only on that proof: a 101 without it (or with the
// wrong one) means the upstream is not the websocket server the client asked for.

import { createHash } from 'node:crypto'
import type { ResponseHead } from '../http1/response-head.js'
import { listHasToken } from '../http1/syntax.js'

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11'

export function acceptFor(key: string): string {
  return createHash('sha1').update(key + GUID).digest('base64')
}

/** Null when the 101 completes the handshake for `key`, else why it does not. */
export function checkUpgradeResponse(head: ResponseHead, key: string): string | null {
  if (head.upgrade === null || !listHasToken(head.upgrade, 'websocket')) return 'a 101 without Upgrade: websocket'
  if (head.connectionTokens === null || !head.connectionTokens.includes('upgrade')) return 'a 101 without Connection: upgrade'
  if (head.wsAccept !== acceptFor(key)) return 'a 101 with a wrong Sec-WebSocket-Accept'
  return null
}
