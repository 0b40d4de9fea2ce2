import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { FileSnapshot } from '../../src/config/file-snapshot.js'

const dirs: string[] = []
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true })
})

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'gw-snapshot-'))
  dirs.push(dir)
  return dir
}

function tempFile(name: string, text: string): string {
  const file = join(tempDir(), name)
  writeFileSync(file, text)
  return file
}

describe('FileSnapshot', () => {
  it('answers the bytes of the first read, even after the file changed on disk', async () => {
    const file = tempFile('cert.pem', 'first')
    const snapshot = FileSnapshot.recording()
    expect((await snapshot.read(file)).toString()).toBe('first')
    writeFileSync(file, 'second')
    expect((await snapshot.read(file)).toString()).toBe('first')
  })

  it('keeps no failed read: the file is read again once it exists', async () => {
    const file = join(tempDir(), 'later.pem')
    const snapshot = FileSnapshot.recording()
    await expect(snapshot.read(file)).rejects.toMatchObject({ code: 'ENOENT' })
    writeFileSync(file, 'now')
    expect((await snapshot.read(file)).toString()).toBe('now')
  })

  it('gives another process the same bytes, and reads nothing else from disk', async () => {
    const file = tempFile('gw.json', '{"a":1}')
    const elsewhere = tempFile('page.html', '<p>down</p>')
    const recorded = FileSnapshot.recording()
    await recorded.read(file)
    const wire = await recorded.toWire(1024)
    expect(typeof wire).toBe('object')
    writeFileSync(file, '{"a":2}')
    const received = FileSnapshot.fromWire(JSON.parse(JSON.stringify(wire)) as Record<string, string>)
    expect((await received.read(file)).toString()).toBe('{"a":1}')
    await expect(received.read(elsewhere)).rejects.toMatchObject({ path: elsewhere, message: 'not among the files the primary read for this reload' })
  })

  it('refuses to encode more than the bound, naming the largest files', async () => {
    const big = tempFile('huge.html', 'x'.repeat(2000))
    const small = tempFile('gw.json', '{}')
    const snapshot = FileSnapshot.recording()
    await snapshot.read(small)
    await snapshot.read(big)
    const wire = await snapshot.toWire(1024)
    expect(wire).toBe(`the files this reload reads add up to 2002 bytes, over the 1024 that can be sent to the workers (largest: ${big} 2000 bytes, ${small} 2 bytes)`)
  })
})
