// A failure to start that an operator must act on: the message says what, where and the fix.

export class StartupError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'StartupError'
  }
}

/** "listener https cannot bind 0.0.0.0:443: permission denied (EACCES). Fix: ..." */
export function bindError(what: string, host: string, port: number, err: NodeJS.ErrnoException): StartupError {
  const code = err.code ?? 'unknown'
  let reason = err.message
  let fix = 'check the address and port in the config'
  switch (code) {
    case 'EACCES':
      reason = 'permission denied'
      fix = port < 1024
        ? `ports below 1024 need root or the capability: sudo setcap cap_net_bind_service=+ep "$(readlink -f "$(which node)")", or use a port above 1023 (e.g. ${port + 8000})`
        : 'the port is reserved or blocked by policy; pick another port'
      break
    case 'EADDRINUSE':
      reason = 'the address is already in use'
      fix = `stop what is listening there (ss -ltnp 'sport = :${port}') or pick another port`
      break
    case 'EADDRNOTAVAIL':
      reason = 'the address does not belong to this machine'
      fix = 'use an address of a local interface, or 0.0.0.0'
      break
  }
  return new StartupError(`${what} cannot bind ${host}:${port}: ${reason} (${code}). Fix: ${fix}`, { cause: err })
}
