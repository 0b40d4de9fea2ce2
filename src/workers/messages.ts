// What the primary and its workers say to each other over the cluster IPC channel.
//
// A reload runs in two phases so that it is swapped in everywhere or nowhere: the primary
// sends `reload-prepare` with the bytes of every file it read; each worker checks them and binds
// new listeners, changing nothing visible, and answers `reload-prepared` (no errors: ready).
// Only when every worker is ready does the primary send `reload-commit`; otherwise
// `reload-abort`. A worker answers a commit with `reload-committed` once the new config is in
// force; the reload's answer waits for that. Each worker gets its own id per reload (the
// answers' `id` matches it).

import type { WireFiles } from '../config/file-snapshot.js'
import type { ConfigIssue } from '../config/types.js'
import type { RouteConfig } from '../config/types.js'
import type { RegistryEvent, RegistrySnapshot } from '../registry/registry-source.js'

export type ToWorker =
  /**
   * The first answer to `hello`: the files of the last reload the primary committed (null: none
   * since start), so a worker (re)started after a reload runs what the others run, not whatever
   * the files on disk say now; and the run's TLS session ticket keys (base64), so a client
   * resumes its session whichever worker, restarted ones included, takes its next connection.
   * The keys travel only here: never in the environment, a file or a log line.
   */
  | { type: 'start-config'; files: WireFiles | null; ticketKeys: string }
  | { type: 'registry-snapshot'; snapshot: RegistrySnapshot }
  | { type: 'registry-event'; event: RegistryEvent }
  | { type: 'admin-routes'; routes: readonly RouteConfig[] }
  | { type: 'purge'; key?: string }
  /** `giveUpMs`: abort a prepared reload that hears neither commit nor abort in this time. */
  | { type: 'reload-prepare'; id: number; files: WireFiles; giveUpMs: number }
  | { type: 'reload-commit'; id: number }
  | { type: 'reload-abort'; id: number }
  | { type: 'figures'; id: number }
  | { type: 'reopen-logs' }
  | { type: 'drain' }

export type ToPrimary =
  /** The worker listens for messages now (anything sent before would be lost): send state. */
  | { type: 'hello' }
  | { type: 'ready' }
  | { type: 'failed'; message: string }
  /** No errors: prepared, waiting for commit or abort. Errors: nothing was changed. */
  | { type: 'reload-prepared'; id: number; errors: ConfigIssue[] }
  /** The reload with this id is in force here. */
  | { type: 'reload-committed'; id: number }
  | { type: 'figures'; id: number; metrics: string; stats: Record<string, unknown> }

export function isMessage(value: unknown): value is { type: string } {
  return typeof value === 'object' && value !== null && typeof (value as { type?: unknown }).type === 'string'
}
