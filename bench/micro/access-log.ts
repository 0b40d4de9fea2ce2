// The access log's own cost per request: encoding a JSON line, batching it and writing it
// to a file, measured in-process over 200 000 requests (the figure to set against the
// gateway's CPU per proxied request, which the access-log scenario reports).

import { mkdtempSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { requestDone, type RequestDoneMessage } from '../../src/observability/channels.js'
import { AccessLog } from '../../src/observability/access-log.js'

const dir = mkdtempSync(join(tmpdir(), 'gw-access-log-'))
const path = join(dir, 'access.log')
const log = new AccessLog({ enabled: true, path })
await log.start()
const N = 200_000
const message = (i: number): RequestDoneMessage => ({
  listener: 'https', clientAddress: '203.0.113.7', method: 'GET', host: 'ide.example.com', path: `/api/workspace/w${i % 1000}`,
  status: 200, bytesIn: 512, bytesOut: 1532, durationMs: 2.345678, routeId: 'master', target: '127.0.0.1:8080',
  requestId: `3bcf2662fb72-${i.toString(36)}`, error: null, time: Date.now(),
})
const cpu0 = process.cpuUsage()
const t0 = process.hrtime.bigint()
for (let i = 0; i < N; i++) {
  requestDone.publish(message(i))
  if (i % 5000 === 0) await new Promise((r) => setImmediate(r)) // let writes run, as between requests
}
await log.idle()
const wallNs = Number(process.hrtime.bigint() - t0) / N
const cpu = process.cpuUsage(cpu0)
const cpuNs = ((cpu.user + cpu.system) * 1000) / N
const f = log.figures()
process.stdout.write(`lines ${f.lines}, dropped ${f.dropped}, errors ${f.writeErrors}\n`)
process.stdout.write(`access log: ${wallNs.toFixed(0)} ns wall, ${cpuNs.toFixed(0)} ns CPU per request (message built, line encoded, batched, written); ${(statSync(path).size / N).toFixed(0)} bytes per line\n`)
await log.close()
rmSync(dir, { recursive: true, force: true })
