import { mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs'
import type http from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { afterEach, describe, expect, it } from 'vitest'
import { AccessLog, LineEncoder } from '../../src/observability/access-log.js'
import { requestDone, type RequestDoneMessage } from '../../src/observability/channels.js'
import { waitFor } from '../helpers/fake-registry.js'
import { startGateway, type TestGateway } from '../helpers/gateway.js'
import { httpUpstream, type TestServer } from '../helpers/upstream.js'

let gw: TestGateway | null = null
let up: TestServer<http.Server> | null = null
const logs: AccessLog[] = []
const dirs: string[] = []
afterEach(async () => {
  await gw?.close()
  await up?.close()
  gw = null
  up = null
  for (const l of logs.splice(0)) await l.close()
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true })
})

function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'gw-log-'))
  dirs.push(d)
  return d
}

function lines(file: string): Record<string, unknown>[] {
  return readFileSync(file, 'utf8').split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>)
}

const message = (n: number): RequestDoneMessage => ({
  listener: 'http', clientAddress: '127.0.0.1', method: 'GET', host: 'h', path: `/p/${n}`, status: 200, bytesIn: 10, bytesOut: 20,
  durationMs: 1.5, routeId: 'r', target: 't:1', requestId: `id-${n}`, error: null, time: Date.now(),
})

describe('access log', () => {
  it('writes one JSON line per request with the fields an operator needs', async () => {
    const dir = tempDir()
    const file = join(dir, 'access.log')
    up = await httpUpstream((_req, res) => res.end('hello'))
    gw = await startGateway({ upstreams: { master: { targets: [up.target] } }, routes: [{ id: 'master', pathPrefix: '/', upstream: 'master' }], accessLog: { enabled: true, path: file } })
    await (await fetch(`http://127.0.0.1:${gw.port()}/a/b?c=1`, { headers: { 'x-request-id': 'req-42' } })).text()
    expect((await fetch(`http://127.0.0.1:${gw.port()}/x`, { method: 'PUT', body: 'abc' })).status).toBe(200)
    await gw.gw.observability!.accessLog.idle()
    const [first, second] = lines(file)
    expect(first).toMatchObject({
      client: '127.0.0.1', listener: 'http', method: 'GET', host: `127.0.0.1:${gw.port()}`, path: '/a/b', status: 200,
      route: 'master', target: up.target, requestId: 'req-42', error: null,
    })
    expect(Date.parse(first.time as string)).toBeGreaterThan(Date.now() - 60_000)
    expect(first.bytesOut).toBeGreaterThan(5)
    expect(typeof first.durationMs).toBe('number')
    expect(second).toMatchObject({ method: 'PUT', path: '/x' })
    expect(second.bytesIn as number).toBeGreaterThan(3)
  })

  it('writes to a new file after the old one is moved away and the log is reopened (rotation)', async () => {
    const dir = tempDir()
    const file = join(dir, 'access.log')
    up = await httpUpstream((_req, res) => res.end('hello'))
    gw = await startGateway({ upstreams: { master: { targets: [up.target] } }, routes: [{ id: 'master', pathPrefix: '/', upstream: 'master' }], accessLog: { enabled: true, path: file } })
    const log = gw.gw.observability!.accessLog
    await (await fetch(`http://127.0.0.1:${gw.port()}/before`)).text()
    await log.idle()
    renameSync(file, `${file}.1`)
    await (await fetch(`http://127.0.0.1:${gw.port()}/moved`)).text()
    gw.gw.observability!.reopenLogs()
    await (await fetch(`http://127.0.0.1:${gw.port()}/after`)).text()
    await log.idle()
    const old = lines(`${file}.1`).map((l) => l.path)
    const fresh = lines(file).map((l) => l.path)
    expect(old).toContain('/before')
    expect(fresh).toContain('/after')
    expect([...old, ...fresh].sort()).toEqual(['/after', '/before', '/moved'])
    expect(log.figures().reopens).toBe(1)
  })

  it('drops and counts lines instead of buffering without bound when the output stalls', async () => {
    // an output that holds every write until it is unstalled
    let stalled = true
    const held: (() => void)[] = []
    const out = new Writable({
      write(_chunk, _enc, cb) {
        if (stalled) held.push(() => cb())
        else cb()
      },
    })
    const log = new AccessLog({ enabled: true, path: null }, { stdout: out, flushBytes: 1, maxBufferedBytes: 2000 })
    logs.push(log)
    await log.start()
    for (let i = 0; i < 100; i++) requestDone.publish(message(i))
    expect(log.dropped).toBeGreaterThan(50)
    const dropped = log.dropped
    stalled = false
    for (const release of held.splice(0)) release()
    await log.idle()
    expect(log.dropped).toBe(dropped)
    expect(log.lines + log.dropped).toBe(100)
  })

  it('after a write, waits for a full batch (or the timer) before the next one', async () => {
    const chunks: string[] = []
    let release: (() => void) | null = null
    const out = new Writable({
      write(chunk, _enc, cb) {
        chunks.push(String(chunk))
        if (chunks.length === 1) release = () => cb() // the first write takes a while
        else cb()
      },
    })
    const log = new AccessLog({ enabled: true, path: null }, { stdout: out, flushBytes: 20_000, flushMs: 60_000 })
    logs.push(log)
    await log.start()
    for (let i = 0; i < 256; i++) requestDone.publish(message(i)) // one encoded batch: over 20 kB
    expect(chunks.length).toBe(1)
    for (let i = 256; i < 300; i++) requestDone.publish(message(i)) // well under 20 kB more
    release!()
    await new Promise((resolve) => setImmediate(resolve))
    const afterFirst = chunks.length // the first write's buffers, all through now
    await log.idle()
    expect(chunks.length).toBeGreaterThan(afterFirst) // the rest waited for idle(), not the first write's end
    expect(chunks.join('').trim().split('\n')).toHaveLength(300)
  })

  it('writes what a write left behind when the timer runs out, with no new request', async () => {
    const chunks: string[] = []
    const out = new Writable({ write(chunk, _enc, cb) { chunks.push(String(chunk)); setImmediate(cb) } })
    const log = new AccessLog({ enabled: true, path: null }, { stdout: out, flushBytes: 20_000, flushMs: 20 })
    logs.push(log)
    await log.start()
    for (let i = 0; i < 300; i++) requestDone.publish(message(i))
    await waitFor(() => chunks.join('').trim().split('\n').length === 300, 5000, 'all 300 lines, by the timer')
  })

  it('writes a line longer than a batch buffer whole, between the lines around it', async () => {
    const dir = tempDir()
    const file = join(dir, 'access.log')
    const log = new AccessLog({ enabled: true, path: file }, { flushBytes: 4096 })
    logs.push(log)
    await log.start()
    const long = `/${'\u00e9"'.repeat(3000)}` // 6,001 characters, each but the first escaped
    for (let i = 0; i < 40; i++) requestDone.publish(i === 20 ? { ...message(i), path: long } : message(i))
    await log.idle()
    const paths = lines(file).map((l) => l.path)
    expect(paths).toEqual(Array.from({ length: 40 }, (_, i) => i === 20 ? long : `/p/${i}`))
  })

  it('batches lines to stdout when no path is set', async () => {
    const chunks: string[] = []
    const out = new Writable({ write(chunk, _enc, cb) { chunks.push(String(chunk)); cb() } })
    const log = new AccessLog({ enabled: true, path: null }, { stdout: out, flushMs: 5 })
    logs.push(log)
    await log.start()
    for (let i = 0; i < 10; i++) requestDone.publish(message(i))
    expect(chunks).toEqual([]) // nothing written on the request path
    await log.idle()
    expect(chunks.length).toBe(1)
    expect(chunks[0].trim().split('\n').map((l) => JSON.parse(l).path)).toEqual(Array.from({ length: 10 }, (_, i) => `/p/${i}`))
  })
})

describe('access log line format', () => {
  /** The line the encoder writes for `m`, given exactly the room it asks for. */
  const lineOf = (e: LineEncoder, m: RequestDoneMessage): string => {
    const buf = Buffer.alloc(e.maxLength(m))
    return buf.toString('latin1', 0, e.encode(m, buf, 0))
  }

  // What JSON.stringify of the same fields says: the hand-built line must parse to exactly this.
  const reference = (m: RequestDoneMessage) => ({
    time: new Date(m.time).toISOString(), client: m.clientAddress, listener: m.listener, method: m.method, host: m.host, path: m.path,
    status: m.status, bytesIn: m.bytesIn, bytesOut: m.bytesOut, durationMs: Math.round(m.durationMs * 1000) / 1000,
    route: m.routeId, target: m.target, requestId: m.requestId, error: m.error,
  })

  it('gives the JSON.stringify fields, in ASCII, for hostile values too', () => {
    const e = new LineEncoder()
    const hostile = [
      message(1),
      { ...message(2), path: '/a"b\\c', requestId: 'id-\u00e9\u0001\u2028\ud800x', host: null, routeId: null, target: null, error: 'upstream_timeout' },
      { ...message(3), clientAddress: '::ffff:10.0.0.1', listener: 'li"st\nener', durationMs: 0.0004 },
      { ...message(4), durationMs: 1234.5678, bytesIn: 0, status: 502 },
      { ...message(5), time: Date.now() + 1000 },
      ...[0, 7, 70, 999].map((ms) => ({ ...message(6), time: Date.UTC(2026, 10, 29, 3, 4, 5, ms) })),
      ...[0, 0.0005, 0.05, 1.0001, 12.05, 999.9999, 86_400_000.25].map((durationMs, i) => ({ ...message(10 + i), durationMs, bytesOut: 10 ** i })),
    ]
    for (const m of hostile) {
      const line = lineOf(e, m)
      expect(line.endsWith('}\n')).toBe(true)
      expect(line).toMatch(/^[\x20-\x7e]*\n$/)
      expect(JSON.parse(line)).toEqual(reference(m))
    }
  })

  it('does not carry a field of one line over to the next when it changes', () => {
    const e = new LineEncoder()
    const a = { ...message(1), clientAddress: '10.0.0.1', host: 'a', routeId: 'ra', target: 'ta:1' }
    const b = { ...message(2), clientAddress: '10.0.0.2', host: 'b', routeId: 'rb', target: 'tb:1', listener: 'https' }
    for (const m of [a, b, a, b, { ...a, host: null }]) expect(JSON.parse(lineOf(e, m))).toEqual(reference(m))
  })

  it('encodes empty and null fields right on a fresh encoder', () => {
    const m = { ...message(1), clientAddress: '', host: null, routeId: null, target: null }
    expect(JSON.parse(lineOf(new LineEncoder(), m))).toEqual(reference(m))
  })

  it('matches JSON.stringify for 3000 random messages, one after another in one buffer', () => {
    let seed = 42 // mulberry32: the same messages on every run
    const random = (): number => {
      seed = (seed + 0x6d2b79f5) | 0
      let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296
    }
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)]
    const chars = ['a', 'Z', '/', '-', ' ', '"', '\\', '\n', '\u0000', '\u001f', '\u007f', '\u00e9', '\u2028', '\ud83d\ude00', '\ud800', '\udfff', '\uffff']
    const text = (): string => Array.from({ length: Math.floor(random() * 12) }, () => random() < 0.7 ? 'x' : pick(chars)).join('')
    const maybe = (): string | null => random() < 0.2 ? null : text()
    const e = new LineEncoder()
    const buf = Buffer.alloc(1 << 20)
    let at = 0
    for (let i = 0; i < 3000; i++) {
      const m: RequestDoneMessage = {
        listener: pick(['http', 'https', text()]), clientAddress: pick(['127.0.0.1', '::1', text()]), method: pick(['GET', 'POST', text()]),
        host: pick([null, 'ide.example.com', maybe()]), path: text(), status: Math.floor(random() * 600),
        bytesIn: Math.floor(random() * 2 ** (random() * 45)), bytesOut: Math.floor(random() * 2 ** (random() * 45)),
        durationMs: random() * 10 ** (random() * 9), routeId: pick([null, 'master', maybe()]), target: pick([null, '127.0.0.1:8080', maybe()]),
        requestId: text(), error: pick([null, 'upstream_timeout', maybe()]), time: Date.UTC(2000, 0, 1) + Math.floor(random() * 3e12),
      }
      const end = e.encode(m, buf, at)
      expect(end - at).toBeLessThanOrEqual(e.maxLength(m))
      const line = buf.toString('latin1', at, end)
      expect(line).toMatch(/^[\x20-\x7e]*\n$/)
      expect(JSON.parse(line)).toEqual(reference(m))
      at = end < buf.length - 65536 ? end : 0
    }
  })

  it('writes a duration that is not a finite number as null', () => {
    expect(JSON.parse(lineOf(new LineEncoder(), { ...message(1), durationMs: Number.NaN })).durationMs).toBeNull()
  })
})
