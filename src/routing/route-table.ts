// The compiled static route table (Envoy's matcher order): exact host, then wildcard host
// (longest suffix first), then any host; inside a host, the longest pathPrefix that ends on
// a segment boundary. Compiled once per change and never mutated: a reload builds a new
// table and swaps one reference, so each request sees one whole table.
//
// Lookup never scans the route list: a host is one or a few Map probes, a path at most one
// probe per segment up to the deepest prefix the host's routes use.
//
// When a host bucket has no prefix matching the path, lookup falls through to the next
// bucket (wildcard, then any host), as an HAProxy operator's first-matching-rule config would.

export interface RouteDefinition {
  readonly id: string
  readonly host?: string
  readonly pathPrefix: string
}

class PathIndex<R> {
  private readonly byPrefix = new Map<string, R>()
  private maxDepth = 0

  add(prefix: string, route: R): void {
    this.byPrefix.set(prefix, route)
    let depth = 0
    for (let i = 0; i < prefix.length; i++) if (prefix.charCodeAt(i) === 0x2f) depth++
    if (prefix === '/') depth = 0
    if (depth > this.maxDepth) this.maxDepth = depth
  }

  has(prefix: string): boolean {
    return this.byPrefix.has(prefix)
  }

  match(path: string): R | undefined {
    // Cut the path to the deepest prefix this index holds, then walk up segment by segment.
    let end = path.length
    let seen = 0
    for (let i = 1; i < path.length; i++) {
      if (path.charCodeAt(i) === 0x2f && ++seen === this.maxDepth) { end = i; break }
    }
    let candidate = end === path.length ? path : path.slice(0, end)
    for (;;) {
      if (candidate.length > 1 && candidate.charCodeAt(candidate.length - 1) === 0x2f) {
        candidate = candidate.slice(0, -1) // "/a/" is the same segment as "/a"
        continue
      }
      const r = this.byPrefix.get(candidate)
      if (r !== undefined) return r
      if (candidate.length <= 1) return this.byPrefix.get('/')
      const slash = candidate.lastIndexOf('/')
      candidate = slash <= 0 ? '/' : candidate.slice(0, slash)
    }
  }
}

/** "/a/b/" and "/a/b" name the same prefix. */
export function normalizePrefix(prefix: string): string {
  let p = prefix
  while (p.length > 1 && p.endsWith('/')) p = p.slice(0, -1)
  return p
}

export class RouteTable<R extends RouteDefinition> {
  private readonly exact = new Map<string, PathIndex<R>>()
  /** Keyed by the suffix after "*", e.g. ".example.com". */
  private readonly wildcard = new Map<string, PathIndex<R>>()
  private any: PathIndex<R> | null = null
  readonly routes: readonly R[]

  /** Later routes with the same host and prefix replace earlier ones (admin routes come last). */
  constructor(routes: readonly R[]) {
    this.routes = Object.freeze(routes.slice())
    for (const route of routes) {
      const prefix = normalizePrefix(route.pathPrefix)
      const host = route.host?.toLowerCase()
      let index: PathIndex<R>
      if (host === undefined || host === '' || host === '*') {
        index = this.any ??= new PathIndex<R>()
      } else if (host.startsWith('*.')) {
        const suffix = host.slice(1)
        index = this.wildcard.get(suffix) ?? new PathIndex<R>()
        this.wildcard.set(suffix, index)
      } else {
        index = this.exact.get(host) ?? new PathIndex<R>()
        this.exact.set(host, index)
      }
      index.add(prefix, route)
    }
  }

  /** `host` is the Host header as sent (any case, maybe with ":port"); null when absent. */
  match(host: string | null, path: string): R | null {
    if (host !== null && (this.exact.size > 0 || this.wildcard.size > 0)) {
      const name = hostName(host)
      if (this.exact.size > 0) {
        const r = this.exact.get(name)?.match(path)
        if (r !== undefined) return r
      }
      if (this.wildcard.size > 0) {
        // Longest suffix first: "a.b.example.com" tries ".b.example.com", then ".example.com".
        let dot = name.indexOf('.')
        while (dot !== -1) {
          const r = this.wildcard.get(name.slice(dot))?.match(path)
          if (r !== undefined) return r
          dot = name.indexOf('.', dot + 1)
        }
      }
    }
    return this.any?.match(path) ?? null
  }
}

/** Lower-cased host name without the port ("[::1]:80" -> "[::1]"). */
export function hostName(host: string): string {
  let end = host.length
  if (host.charCodeAt(0) === 0x5b /* [ */) {
    const close = host.indexOf(']')
    if (close !== -1) end = close + 1
  } else {
    const colon = host.lastIndexOf(':')
    if (colon !== -1) end = colon
  }
  // Host names are ASCII here (the parser refused anything else); lower-case only when needed.
  for (let i = 0; i < end; i++) {
    const c = host.charCodeAt(i)
    if (c >= 0x41 && c <= 0x5a) return host.slice(0, end).toLowerCase()
  }
  return end === host.length ? host : host.slice(0, end)
}
