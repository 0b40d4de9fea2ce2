// The files one reload reads (the config file, certificates and keys, error pages), each read
// from disk once. A primary checks its reload against these bytes and sends them to its workers,
// so every process validates and applies the same bytes, even while a file is being rewritten
// (a certificate renewal writes half a file, then the rest).

import { readFile } from 'node:fs/promises'

/** Reads a whole file; the config, certificate and error page loaders read through one. */
export type FileReader = (file: string) => Promise<Buffer>

export const readFromDisk: FileReader = (file) => readFile(file)

/** File contents by absolute path, base64: cluster IPC serialises messages as JSON. */
export type WireFiles = Record<string, string>

export class FileSnapshot {
  private readonly files = new Map<string, Promise<Buffer>>()

  private constructor(private readonly sealed: boolean) {}

  /** Reads each file from disk the first time it is asked for, and answers those bytes after. */
  static recording(): FileSnapshot {
    return new FileSnapshot(false)
  }

  /** The files another process read: nothing is read from disk, any other file is an error. */
  static fromWire(files: WireFiles): FileSnapshot {
    const snapshot = new FileSnapshot(true)
    for (const [file, base64] of Object.entries(files)) {
      if (typeof base64 !== 'string') throw new Error(`the primary sent ${file} as ${typeof base64}, not base64 text`)
      snapshot.files.set(file, Promise.resolve(Buffer.from(base64, 'base64')))
    }
    return snapshot
  }

  readonly read: FileReader = (file) => {
    const known = this.files.get(file)
    if (known !== undefined) return known
    if (this.sealed) {
      // Shaped like a failed fs read (`path`), so the loaders name the file as they do for those.
      return Promise.reject(Object.assign(new Error('not among the files the primary read for this reload'), { path: file }))
    }
    const bytes = readFile(file)
    this.files.set(file, bytes)
    // A failed read is not kept: a snapshot holds only what could be read.
    bytes.catch(() => this.files.delete(file))
    return bytes
  }

  /**
   * The files for an IPC message, or why they cannot go: more than `maxBytes` in all (a
   * misconfigured path to a huge file should fail the reload, not fill every worker's pipe).
   */
  async toWire(maxBytes: number): Promise<WireFiles | string> {
    const entries = await Promise.all([...this.files].map(async ([file, bytes]) => [file, await bytes] as const))
    const total = entries.reduce((sum, [, b]) => sum + b.length, 0)
    if (total > maxBytes) {
      const biggest = [...entries].sort((a, b) => b[1].length - a[1].length).slice(0, 3).map(([file, b]) => `${file} ${b.length} bytes`)
      return `the files this reload reads add up to ${total} bytes, over the ${maxBytes} that can be sent to the workers (largest: ${biggest.join(', ')})`
    }
    const wire: WireFiles = {}
    for (const [file, b] of entries) wire[file] = b.toString('base64')
    return wire
  }
}
