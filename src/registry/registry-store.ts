// The state file (config `stateFile`): one JSON document shared by the embedded registry
// (`servers`) and the admin API (`routes`, and whatever else a later version adds):
//
//   { "version": N, "servers": [ ...ServerEntry ], "routes": [ ... ] }
//
// Writes are atomic (temp file in the same folder, fsync, rename, fsync the folder: a crash
// leaves the old file or the new one, never half of each) and serialized through one queue
// that coalesces whatever piled up during a write into the next one. A file that cannot be
// read back is an error that stops the start, naming the file and the problem: the gateway
// never replaces an operator's state it does not understand.

import { mkdir, open, readFile, rename, unlink } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { formatFieldErrors, parseServerEntry } from './server-entry.js'
import type { FieldError, ServerEntry } from './server-entry.js'

export interface StateDocument {
  /** Bumped by the store once per committed mutation; never set it yourself. */
  readonly version: number
  readonly servers: readonly ServerEntry[]
  /** Other sections (`routes`, ...) belong to their owners; the store keeps them as they are. */
  readonly [section: string]: unknown
}

/**
 * Produces the next document. It gets a shallow copy of the current one: replace whole
 * sections (`draft.routes = [...]`), never edit the arrays or objects it holds in place
 * (they are shared with the committed document). Return `false` for "nothing to change".
 * Throwing rejects this update only.
 */
export type Mutator = (draft: { version: number; servers: readonly ServerEntry[]; [section: string]: unknown }) => void | false

/** Called synchronously, in queue order, once the mutation is durable on disk. */
export type CommitHook = (document: StateDocument, version: number) => void

export class StateFileError extends Error {
  readonly file: string
  readonly errors: readonly FieldError[]
  constructor(file: string, errors: readonly FieldError[], options?: { cause?: unknown }) {
    super(`state file ${file} is invalid: ${formatFieldErrors(errors)} ` +
      '(fix it or move it away; the gateway never overwrites a state file it cannot read)', options)
    this.name = 'StateFileError'
    this.file = file
    this.errors = errors
  }
}

interface Pending {
  readonly mutator: Mutator
  readonly onCommit: CommitHook | undefined
  readonly resolve: (version: number) => void
  readonly reject: (err: unknown) => void
}

const EMPTY: StateDocument = Object.freeze({ version: 0, servers: Object.freeze([]) as readonly ServerEntry[] })

export class RegistryStore {
  private doc: StateDocument
  private readonly queue: Pending[] = []
  private flushing: Promise<void> | null = null

  private constructor(readonly file: string, doc: StateDocument) {
    this.doc = doc
  }

  /** Loads `file` (absent: an empty document, written on the first update). Rejects with a StateFileError when it is unreadable. */
  static async open(file: string): Promise<RegistryStore> {
    let text: string
    try {
      text = await readFile(file, 'utf8')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return new RegistryStore(file, EMPTY)
      throw new StateFileError(file, [{ path: '$', message: `cannot be read: ${(err as Error).message}` }], { cause: err })
    }
    let body: unknown
    try {
      body = JSON.parse(text)
    } catch (err) {
      throw new StateFileError(file, [{ path: '$', message: `is not JSON: ${(err as Error).message}` }], { cause: err })
    }
    const errors = validateDocument(body)
    if (errors.length > 0) throw new StateFileError(file, errors)
    return new RegistryStore(file, normalise(body as Record<string, unknown>))
  }

  /** The last committed document (what is on disk). */
  get document(): StateDocument {
    return this.doc
  }

  /**
   * Queues a mutation; resolves with the version it got once it is on disk (or with the
   * current version when the mutator returned `false`). Mutations apply in call order; a
   * failed write rejects every mutation it carried and leaves the document unchanged.
   */
  update(mutator: Mutator, onCommit?: CommitHook): Promise<number> {
    return new Promise<number>((resolve, reject) => {
      this.queue.push({ mutator, onCommit, resolve, reject })
      if (this.flushing === null) this.flushing = this.flush()
    })
  }

  /** Resolves when every queued mutation has been written (or failed). */
  async idle(): Promise<void> {
    while (this.flushing !== null) await this.flushing
  }

  private async flush(): Promise<void> {
    // Yield first: `this.flushing` must be assigned before this can finish, and updates made in
    // the same tick join the first batch.
    await null
    try {
      while (this.queue.length > 0) {
        const batch = this.queue.splice(0)
        let draft = this.doc
        const applied: { pending: Pending; doc: StateDocument; changed: boolean }[] = []
        for (const pending of batch) {
          try {
            const next = { ...draft } as { version: number; servers: readonly ServerEntry[]; [section: string]: unknown }
            if (pending.mutator(next) === false) {
              applied.push({ pending, doc: draft, changed: false })
              continue
            }
            next.version = draft.version + 1
            if (next.servers !== draft.servers) {
              const errors = validateServers(next.servers, 'servers')
              if (errors.length > 0) throw new StateFileError(this.file, errors)
            }
            draft = next
            applied.push({ pending, doc: next, changed: true })
          } catch (err) {
            pending.reject(err)
          }
        }
        if (draft !== this.doc) {
          try {
            await writeAtomic(this.file, JSON.stringify(draft, null, 2) + '\n')
          } catch (err) {
            for (const a of applied) {
              if (a.changed) a.pending.reject(err)
              else a.pending.resolve(this.doc.version)
            }
            continue
          }
          this.doc = draft
        }
        for (const a of applied) {
          if (a.changed && a.pending.onCommit !== undefined) {
            try {
              a.pending.onCommit(a.doc, a.doc.version)
            } catch {
              // the write is durable; a hook's bug must not un-resolve it
            }
          }
          a.pending.resolve(a.doc.version)
        }
      }
    } finally {
      this.flushing = null
    }
  }
}

function validateServers(servers: unknown, path: string): FieldError[] {
  if (!Array.isArray(servers)) return [{ path, message: 'must be an array' }]
  const errors: FieldError[] = []
  const seen = new Set<string>()
  for (let i = 0; i < servers.length && errors.length < 20; i++) {
    const entry = parseServerEntry(servers[i], `${path}[${i}]`)
    if (Array.isArray(entry)) {
      errors.push(...entry)
    } else if (seen.has(entry.key)) {
      errors.push({ path: `${path}[${i}].key`, message: `duplicate key ${entry.key}` })
    } else {
      seen.add(entry.key)
    }
  }
  return errors
}

function validateDocument(body: unknown): FieldError[] {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return [{ path: '$', message: 'must be a JSON object' }]
  const obj = body as Record<string, unknown>
  const errors: FieldError[] = []
  if (obj.version !== undefined && (typeof obj.version !== 'number' || !Number.isSafeInteger(obj.version) || obj.version < 0)) {
    errors.push({ path: 'version', message: 'must be a non-negative integer' })
  }
  if (obj.servers !== undefined) errors.push(...validateServers(obj.servers, 'servers'))
  return errors
}

/** A validated document with `version` and `servers` in canonical form; other sections untouched. */
function normalise(obj: Record<string, unknown>): StateDocument {
  const servers = ((obj.servers ?? []) as unknown[]).map((s) => parseServerEntry(s, '') as ServerEntry)
  return { ...obj, version: (obj.version as number | undefined) ?? 0, servers }
}

/** Temp file beside the target, fsync, rename over it, fsync the folder (POSIX rename is atomic within a file system). */
export async function writeAtomic(file: string, data: string, mode = 0o600): Promise<void> {
  const dir = dirname(file)
  await mkdir(dir, { recursive: true })
  const temp = join(dir, `.${basename(file)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`)
  try {
    const handle = await open(temp, 'wx', mode)
    try {
      await handle.writeFile(data, 'utf8')
      await handle.sync()
    } finally {
      await handle.close()
    }
    await rename(temp, file)
  } catch (err) {
    await unlink(temp).catch(() => {})
    throw err
  }
  // The rename is only durable once the folder entry is (fsync(2): "also need an explicit
  // fsync() on a file descriptor for the directory").
  let dirHandle
  try {
    dirHandle = await open(dir, 'r')
    await dirHandle.sync()
  } catch {
    // some file systems refuse fsync on a folder; the rename itself has happened
  } finally {
    await dirHandle?.close()
  }
}
