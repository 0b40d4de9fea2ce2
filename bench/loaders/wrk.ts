// wrk (C, epoll): the loader of choice for HTTP loads when installed; it needs a fraction of
// the CPU autocannon does for the same rate, which matters when loader, proxy and upstream
// share two cores. One thread: a second would only compete with the proxy for a core.
// Method, body and headers go through a generated Lua script whose `done` hook prints the
// figures as one JSON line (wrk's own text output is meant for people).
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { logTail, spawnTracked } from '../children.js'
import type { HttpLoad, HttpLoader, Measurement } from './measurement.js'

const MARK = 'BENCH_JSON '

interface WrkFigures {
  requests: number
  duration_us: number
  connect: number
  read: number
  write: number
  status: number
  timeout: number
  p50_us: number
  p99_us: number
}

function luaString(text: string): string {
  return JSON.stringify(text)
}

function script(load: HttpLoad): string {
  const lines = [`wrk.method = ${luaString(load.method)}`]
  if (load.body) {
    // Every body byte is the same, so a Lua repeat avoids embedding 64 KB in the script.
    lines.push(`wrk.body = string.rep("x", ${load.body.length})`)
    lines.push(`wrk.headers["Content-Type"] = "application/octet-stream"`)
  }
  for (const [name, value] of Object.entries(load.headers ?? {})) {
    // wrk fills in "Host" from the URL under that exact key; any other spelling would add a
    // second Host header, which a strict proxy rightly rejects (RFC 9112 3.2).
    const key = name.toLowerCase() === 'host' ? 'Host' : name
    lines.push(`wrk.headers[${luaString(key)}] = ${luaString(value)}`)
  }
  if (load.newConnectionPerRequest) lines.push(`wrk.headers["Connection"] = "close"`)
  lines.push(`
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('\\n${MARK}{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
`)
  return lines.join('\n')
}

let runs = 0

export function wrkLoader(workDir: string): HttpLoader {
  return {
    name: 'wrk',
    async run(load: HttpLoad): Promise<Measurement> {
      const n = ++runs
      const file = join(workDir, `wrk-${n}.lua`)
      await writeFile(file, script(load))
      // wrk takes whole seconds only.
      const seconds = Math.max(1, Math.round(load.seconds))
      let figures: WrkFigures | null = null
      const child = spawnTracked('wrk', 'wrk', ['-t1', `-c${load.connections}`, `-d${seconds}s`, '--timeout', '10s', '-s', file, load.url], join(workDir, `wrk-${n}.log`), {
        onLine: (line) => {
          if (line.startsWith(MARK)) figures = JSON.parse(line.slice(MARK.length)) as WrkFigures
        },
      })
      const { code } = await child.exited
      const f = figures as WrkFigures | null
      if (code !== 0 || !f) throw new Error(`wrk failed (exit ${code}): ${logTail(child, 5)}`)
      const measured = f.duration_us / 1e6
      return {
        unit: 'req/s',
        value: f.requests / measured,
        higherIsBetter: true,
        p50Ms: f.p50_us / 1000,
        p99Ms: f.p99_us / 1000,
        errors: f.connect + f.read + f.write + f.timeout,
        non2xx: f.status,
        total: f.requests,
        seconds: measured,
        loader: 'wrk',
      }
    },
  }
}
