// The hot path publishes; metrics, stats and the access log subscribe (undici's
// diagnostics_channel style). A message object is only built when a channel has a
// subscriber, so a gateway with observability off pays one boolean check per event.

import diagnosticsChannel from 'node:diagnostics_channel'

/** One finished HTTP exchange (also a websocket handshake, with status 101). */
export interface RequestDoneMessage {
  listener: string
  clientAddress: string
  method: string
  host: string | null
  path: string
  status: number
  bytesIn: number
  bytesOut: number
  /** From the complete request head to the end of the response, in ms. */
  durationMs: number
  routeId: string | null
  target: string | null
  requestId: string
  /** The gateway's error code when it answered itself or aborted, else null. */
  error: string | null
  /** Epoch ms when the request head was complete. */
  time: number
}

export interface TunnelMessage {
  listener: string
  routeId: string
  target: string
  workspaceKey: string | null
  /** Only on close. */
  durationMs?: number
  bytesUp?: number
  bytesDown?: number
}

export interface UpstreamErrorMessage {
  target: string
  code: string
  message: string
}

export const requestDone = diagnosticsChannel.channel('workspace-gateway:request:done')
export const tunnelOpened = diagnosticsChannel.channel('workspace-gateway:tunnel:open')
export const tunnelClosed = diagnosticsChannel.channel('workspace-gateway:tunnel:close')
export const upstreamFailed = diagnosticsChannel.channel('workspace-gateway:upstream:error')
/** Structured operational events (limits hit, reloads, targets down/up): `{ event, ...fields }`. */
export const gatewayEvent = diagnosticsChannel.channel('workspace-gateway:event')
