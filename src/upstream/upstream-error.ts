// Socket failures on the upstream side, translated once into the contract's codes.

import { GatewayError } from '../errors.js'

const UNREACHABLE = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'EAI_FAIL', 'EAI_NONAME', 'EADDRNOTAVAIL', 'ETIMEDOUT'])

export function upstreamSocketError(err: NodeJS.ErrnoException, target: string, connected: boolean): GatewayError {
  const code = err.code ?? 'EUNKNOWN'
  if (!connected || UNREACHABLE.has(code)) {
    return new GatewayError('upstream_unreachable', `cannot connect to ${target} (${code})`, { cause: err })
  }
  return new GatewayError('upstream_reset', `connection to ${target} failed (${code})`, { cause: err })
}
