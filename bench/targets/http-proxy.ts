// Starts the http-proxy reference (http-proxy-server.ts) as a child process.
import { join } from 'node:path'
import { logTail, spawnTracked, stopChild } from '../children.js'
import { benchDist } from '../paths.js'
import type { HttpProxyArgs, HttpProxyReady } from './http-proxy-server.js'
import { upstreamPortOf, type RunningTarget, type TargetDriver, type TargetEnv, type TargetSpec } from './target.js'

let started = 0

export const httpProxyTarget: TargetDriver = {
  name: 'http-proxy',
  unavailable: () => null,
  async start(spec: TargetSpec, env: TargetEnv): Promise<RunningTarget> {
    const cert = env.certs[spec.cert]
    const args: HttpProxyArgs = { upstreamPort: upstreamPortOf(spec, env), agent: spec.httpProxyAgent ?? 'keep-alive', cert: cert.cert, key: cert.key }
    const log = join(env.workDir, `http-proxy-${++started}.log`)
    const child = spawnTracked('http-proxy', process.execPath, [join(benchDist, 'targets', 'http-proxy-server.js'), JSON.stringify(args)], log, { ipc: true, nofile: env.nofile })
    const ready = await new Promise<HttpProxyReady>((resolve, reject) => {
      child.process.once('message', (message) => resolve(message as HttpProxyReady))
      child.exited.then(() => reject(new Error(`http-proxy exited before it was ready:\n${logTail(child)}`)))
    })
    return {
      name: 'http-proxy',
      httpUrl: `http://127.0.0.1:${ready.httpPort}`,
      httpsUrl: `https://127.0.0.1:${ready.httpsPort}`,
      pid: child.pid,
      stop: () => stopChild(child),
    }
  },
}
