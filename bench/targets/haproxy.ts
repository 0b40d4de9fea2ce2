// The HAProxy reference: the proxy the gateway replaces, run in the foreground (`-db`) from
// a generated config that mirrors the gateway's defaults, so both do the same work:
// - mode http with keep-alive on both sides and HAProxy's default safe connection reuse;
// - nbthread = the gateway's workers (1 unless --workers);
// - X-Forwarded-For/Proto/Host/Port and X-Request-Id added, as the gateway does;
// - timeouts from the gateway's defaults (connect 10 s, headers 10 s, response 60 s, tunnel 1 h);
// - TLS on a second frontend port with the run's certificate (HAProxy wants cert+key in one PEM).
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { logTail, spawnTracked, stopChild } from '../children.js'
import { freePort, waitForPort } from '../net-wait.js'
import { onPath } from '../which.js'
import { upstreamPortOf, type RunningTarget, type TargetDriver, type TargetEnv, type TargetSpec } from './target.js'

interface HaproxyConfigInput {
  readonly httpPort: number
  readonly httpsPort: number
  readonly pem: string
  readonly upstreamPort: number
  readonly threads: number
  readonly maxconn: number
}

export function haproxyConfig(input: HaproxyConfigInput): string {
  return `global
  nbthread ${input.threads}
  maxconn ${input.maxconn}
  tune.ssl.default-dh-param 2048

defaults
  mode http
  option http-keep-alive
  option forwardfor
  maxconn ${input.maxconn}
  timeout connect 10s
  timeout http-request 10s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 60s
  timeout tunnel 1h
  unique-id-format %{+X}o\\ %ci:%cp_%fi:%fp_%Ts_%rt:%pid

frontend bench
  bind 127.0.0.1:${input.httpPort}
  bind 127.0.0.1:${input.httpsPort} ssl crt ${input.pem}
  http-request set-header X-Forwarded-Proto https if { ssl_fc }
  http-request set-header X-Forwarded-Proto http if !{ ssl_fc }
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  http-request set-header X-Forwarded-Port %[dst_port]
  http-request set-header X-Request-Id %[unique-id] unless { req.hdr(x-request-id) -m found }
  default_backend upstream

backend upstream
  server u1 127.0.0.1:${input.upstreamPort}
`
}

let started = 0

export const haproxyTarget: TargetDriver = {
  name: 'haproxy',
  unavailable: () => (onPath('haproxy') ? null : 'haproxy not on PATH (apt-get install haproxy)'),
  async start(spec: TargetSpec, env: TargetEnv): Promise<RunningTarget> {
    const n = ++started
    const httpPort = await freePort()
    const httpsPort = await freePort()
    const file = join(env.workDir, `haproxy-${n}.cfg`)
    await writeFile(file, haproxyConfig({
      httpPort,
      httpsPort,
      pem: env.certs[spec.cert].combined,
      upstreamPort: upstreamPortOf(spec, env),
      threads: env.workers ?? 1,
      maxconn: env.maxConnections,
    }))
    const child = spawnTracked('haproxy', 'haproxy', ['-f', file, '-db'], join(env.workDir, `haproxy-${n}.log`), { nofile: env.nofile })
    try {
      await waitForPort(httpPort, { deadlineMs: 10_000, exited: child.exited, what: 'haproxy' })
      await waitForPort(httpsPort, { deadlineMs: 10_000, exited: child.exited, what: 'haproxy' })
    } catch (err) {
      await stopChild(child)
      throw new Error(`${(err as Error).message}\n${logTail(child)}`)
    }
    return {
      name: 'haproxy',
      httpUrl: `http://127.0.0.1:${httpPort}`,
      httpsUrl: `https://127.0.0.1:${httpsPort}`,
      pid: child.pid,
      stop: () => stopChild(child),
    }
  },
}
