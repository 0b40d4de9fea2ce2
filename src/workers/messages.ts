// What the primary and its workers say to each other over the cluster IPC channel.

import type { ConfigIssue } from '../config/types.js'
import type { RouteConfig } from '../config/types.js'
import type { RegistryEvent, RegistrySnapshot } from '../registry/registry-source.js'

export type ToWorker =
  | { type: 'registry-snapshot'; snapshot: RegistrySnapshot }
  | { type: 'registry-event'; event: RegistryEvent }
  | { type: 'admin-routes'; routes: readonly RouteConfig[] }
  | { type: 'purge'; key?: string }
  | { type: 'reload'; id: number }
  | { type: 'figures'; id: number }
  | { type: 'reopen-logs' }
  | { type: 'drain' }

export type ToPrimary =
  /** The worker listens for messages now (anything sent before would be lost): send state. */
  | { type: 'hello' }
  | { type: 'ready' }
  | { type: 'failed'; message: string }
  | { type: 'reloaded'; id: number; errors: ConfigIssue[] }
  | { type: 'figures'; id: number; metrics: string; stats: Record<string, unknown> }

export function isMessage(value: unknown): value is { type: string } {
  return typeof value === 'object' && value !== null && typeof (value as { type?: unknown }).type === 'string'
}
