// Where a request goes, in the contract's order: a workspace host name, then a workspace path
// (`/{port}_{host}/...`), then the static route table. Workspace targets come only from the
// registry (through the route cache): a key the registry does not know is answered 404 without
// a connection attempted anywhere, so the gateway is never an open proxy.

import { GatewayError } from '../errors.js'
import type { RequestHead } from '../http1/request-head.js'
import { hostKey, pathKey } from '../registry/workspace-key.js'
import type { Target } from '../upstream/target.js'
import type { TargetSet } from '../upstream/target-set.js'
import type { UpstreamGroup } from '../upstream/upstream-group.js'
import { RouteTable, type RouteDefinition } from './route-table.js'
import { isForbiddenTarget, parseTarget } from '../config/validate.js'

function forbiddenTarget(target: string): boolean {
  const parsed = parseTarget(target)
  return parsed === null || isForbiddenTarget(parsed.host)
}

/** What the forwarding engine needs from a routing decision. */
export interface Destination {
  readonly routeId: string
  /** The registry key for workspace requests (their tunnels close when it goes), else null. */
  readonly workspaceKey: string | null
  /** Served (503) to browsers when the destination cannot answer; null: the plain error. */
  readonly errorPage: string | null
  /** A target for the next attempt (`exclude`: the one that just failed); null: none healthy. */
  pick(now: number, exclude: Target | null): Target | null
}

export type RouteSource = 'config' | 'admin'

/** A static route with its upstream group resolved. */
export class CompiledRoute implements RouteDefinition, Destination {
  readonly workspaceKey = null
  constructor(
    readonly id: string,
    readonly host: string | undefined,
    readonly pathPrefix: string,
    readonly source: RouteSource,
    readonly group: UpstreamGroup,
    /** Served over plain HTTP on a listener that redirects to HTTPS. */
    readonly allowHttp = false,
  ) {}

  get routeId(): string {
    return this.id
  }

  get errorPage(): string | null {
    return this.group.errorPage
  }

  pick(now: number, exclude: Target | null): Target | null {
    return this.group.pick(now, exclude)
  }
}

class WorkspaceDestination implements Destination {
  readonly routeId = 'workspace'
  readonly errorPage = null
  constructor(readonly workspaceKey: string, readonly target: Target, readonly allowMetadata: boolean) {}
  /** One container, no alternative: health does not apply (its errors are its own). */
  pick(_now: number, exclude: Target | null): Target | null {
    return this.target === exclude ? null : this.target
  }
}

/** The route cache, as the router sees it: a sync answer when cached, else a promise. */
export interface WorkspaceResolver {
  resolve(key: string): { readonly target: string } | null | Promise<{ readonly target: string } | null>
}

export class Router {
  constructor(
    /** Swapped whole on every change; read once per request. */
    public table: RouteTable<CompiledRoute>,
    private readonly resolver: WorkspaceResolver | null,
    public hostSuffix: string | null,
    private readonly targets: TargetSet,
    public allowMetadataTargets = false,
  ) {}

  /** Throws GatewayError (`no_route`); workspace lookups may return a promise. */
  route(head: RequestHead, workspacesOnly: boolean): Destination | Promise<Destination> {
    const key = this.workspaceKey(head)
    if (key !== null) {
      const entry = this.resolver!.resolve(key)
      if (entry === null || typeof (entry as Promise<unknown>).then !== 'function') return this.workspace(key, entry as { target: string } | null)
      return (entry as Promise<{ target: string } | null>).then((e) => this.workspace(key, e))
    }
    if (workspacesOnly) throw new GatewayError('no_route', 'this listener serves workspace requests only')
    const route = this.table.match(head.host, head.path)
    if (route === null) throw new GatewayError('no_route', `no route for ${head.path}`)
    return route
  }

  /**
   * Whether a listener that redirects to HTTPS serves this request as it is: only on a static
   * route with `allowHttp` (agent binaries, ACME challenges). Workspace requests are
   * redirected without a registry lookup.
   */
  allowsHttp(head: RequestHead, workspacesOnly: boolean): boolean {
    if (workspacesOnly || this.workspaceKey(head) !== null) return false
    return this.table.match(head.host, head.path)?.allowHttp === true
  }

  /** The registry key a workspace request names (host route first, then path), or null. */
  private workspaceKey(head: RequestHead): string | null {
    if (this.resolver === null) return null
    const host = head.host
    let key: string | null = null
    if (host !== null && this.hostSuffix !== null) key = hostKey(host, this.hostSuffix)
    if (key === null) key = pathKey(head.path)?.key ?? null
    return key
  }

  private workspace(key: string, entry: { target: string } | null): Destination {
    if (entry === null) throw new GatewayError('unknown_workspace_server', `the registry knows no workspace server ${JSON.stringify(key)}`)
    // Registry entries are replaced, never changed in place: the destination made for one
    // (target checked, Target found) serves every request until the entry changes.
    const known = this.destinations.get(entry)
    // (Unless its Target was pruned while idle: then a fresh one keeps pools one per address.)
    if (known !== undefined && known.allowMetadata === this.allowMetadataTargets && this.targets.peek(entry.target) === known.target) return known
    // Registry entries get the same guard as route targets: a workspace server is never a
    // link-local or cloud-metadata address (unless admin.allowMetadataTargets says so).
    if (!this.allowMetadataTargets && forbiddenTarget(entry.target)) {
      throw new GatewayError('unknown_workspace_server', `the registry entry for ${JSON.stringify(key)} points at a link-local or metadata address`)
    }
    const made = new WorkspaceDestination(key, this.targets.get(entry.target), this.allowMetadataTargets)
    this.destinations.set(entry, made)
    return made
  }

  private readonly destinations = new WeakMap<object, WorkspaceDestination>()
}
