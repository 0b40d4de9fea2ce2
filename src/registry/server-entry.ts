// One workspace server as the registry knows it (contract: "Registry protocol"). Everything
// that arrives from a registry (the master's, or another gateway's) is hostile input: it goes
// through `parseServerEntry` before it can reach the route cache, so a garbage answer becomes
// a registry error and never a cached route.

export interface ServerEntry {
  /** `{port}_{host}` for path routes, or the full host name for host routes; lowercase. */
  readonly key: string
  /** Where requests for `key` go: `host:port` (IPv6 as `[addr]:port`). */
  readonly target: string
  readonly workspaceId?: string
  /** The agent behind the target, e.g. "wsagent", "terminal", "exec-agent". */
  readonly server?: string
}

export interface FieldError {
  /** JSON path of the bad value, e.g. `servers[3].target`. */
  readonly path: string
  readonly message: string
}

export const MAX_KEY_LENGTH = 255
/** Bound on the optional descriptive fields; they are only echoed, never routed on. */
const MAX_TEXT_LENGTH = 1024

function join(path: string, field: string): string {
  return path === '' ? field : `${path}.${field}`
}

/**
 * Why `key` is not a registry key, or null when it is one. A key is compared byte for byte
 * against the keys `pathKey`/`hostKey` produce, so only visible ASCII without `/` (it travels
 * as one URL path segment) is accepted.
 */
export function keyProblem(key: string): string | null {
  if (key.length === 0) return 'must not be empty'
  if (key.length > MAX_KEY_LENGTH) return `must be at most ${MAX_KEY_LENGTH} characters`
  for (let i = 0; i < key.length; i++) {
    const c = key.charCodeAt(i)
    if (c <= 0x20 || c >= 0x7f || c === 0x2f /* / */) return 'must be visible ASCII without "/"'
  }
  return null
}

function isHostChar(c: number): boolean {
  return (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || (c >= 0x30 && c <= 0x39) ||
    c === 0x2d /* - */ || c === 0x5f /* _ (container names) */
}

/** Parses the decimal port `s` (1..65535, no sign, no leading zero); -1 when it is not one. */
export function parsePort(s: string, start = 0, end = s.length): number {
  const len = end - start
  if (len < 1 || len > 5 || s.charCodeAt(start) === 0x30) return -1
  let port = 0
  for (let i = start; i < end; i++) {
    const c = s.charCodeAt(i)
    if (c < 0x30 || c > 0x39) return -1
    port = port * 10 + (c - 0x30)
  }
  return port <= 65535 ? port : -1
}

/** Why `target` is not `host:port`, or null when it is. */
export function targetProblem(target: string): string | null {
  const colon = target.lastIndexOf(':')
  if (colon <= 0) return 'must be "host:port"'
  if (parsePort(target, colon + 1) < 0) return 'port must be an integer 1..65535'
  if (target.charCodeAt(0) === 0x5b /* [ */) {
    // IPv6 literal, RFC 3986 section 3.2.2: "[" address "]"
    if (target.charCodeAt(colon - 1) !== 0x5d /* ] */ || colon < 4) return 'IPv6 host must be "[address]:port"'
    for (let i = 1; i < colon - 1; i++) {
      const c = target.charCodeAt(i)
      const hex = (c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66) || (c >= 0x41 && c <= 0x46)
      if (!hex && c !== 0x3a && c !== 0x2e) return 'IPv6 host has an invalid character'
    }
    return null
  }
  if (colon > 253) return 'host must be at most 253 characters'
  let labelStart = 0
  for (let i = 0; i <= colon; i++) {
    const c = i === colon ? 0x2e : target.charCodeAt(i)
    if (c === 0x2e /* . */) {
      const len = i - labelStart
      if (len === 0) return 'host has an empty label'
      if (len > 63) return 'host label longer than 63 characters'
      labelStart = i + 1
    } else if (!isHostChar(c)) {
      return 'host must be a DNS name or an IP address'
    }
  }
  return null
}

function optionalText(obj: Record<string, unknown>, field: string, path: string, errors: FieldError[]): string | undefined {
  const v = obj[field]
  // null is read as absent: a master serialising an unset field as null is not an error.
  if (v === undefined || v === null) return undefined
  if (typeof v !== 'string') {
    errors.push({ path: join(path, field), message: 'must be a string' })
    return undefined
  }
  if (v.length > MAX_TEXT_LENGTH) {
    errors.push({ path: join(path, field), message: `must be at most ${MAX_TEXT_LENGTH} characters` })
    return undefined
  }
  return v
}

/**
 * Validates one entry. Returns a fresh object holding only the known fields (unknown fields
 * are dropped, so a newer master can add some), or the list of problems, each naming its JSON
 * path under `path` (pass '' at the top level). The key is lowercased: host names compare
 * case-insensitively and `pathKey`/`hostKey` produce lowercase keys.
 */
export function parseServerEntry(value: unknown, path: string): ServerEntry | FieldError[] {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return [{ path: path === '' ? '$' : path, message: 'must be an object' }]
  }
  const obj = value as Record<string, unknown>
  const errors: FieldError[] = []
  let key = ''
  if (typeof obj.key !== 'string') {
    errors.push({ path: join(path, 'key'), message: 'must be a string' })
  } else {
    const problem = keyProblem(obj.key)
    if (problem !== null) errors.push({ path: join(path, 'key'), message: problem })
    else key = obj.key.toLowerCase()
  }
  let target = ''
  if (typeof obj.target !== 'string') {
    errors.push({ path: join(path, 'target'), message: 'must be a string' })
  } else {
    const problem = targetProblem(obj.target)
    if (problem !== null) errors.push({ path: join(path, 'target'), message: problem })
    else target = obj.target
  }
  const workspaceId = optionalText(obj, 'workspaceId', path, errors)
  const server = optionalText(obj, 'server', path, errors)
  if (errors.length > 0) return errors
  const entry: { key: string; target: string; workspaceId?: string; server?: string } = { key, target }
  if (workspaceId !== undefined) entry.workspaceId = workspaceId
  if (server !== undefined) entry.server = server
  return entry
}

/** The one comparison that decides whether traffic for a key has to move. */
export function sameTarget(a: ServerEntry | null, b: ServerEntry | null): boolean {
  if (a === null || b === null) return a === b
  return a.target === b.target
}

export function formatFieldErrors(errors: readonly FieldError[]): string {
  return errors.map((e) => `${e.path}: ${e.message}`).join('; ')
}
