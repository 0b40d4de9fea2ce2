// Starts the upstream server (upstream-server.ts) as a child and waits for its ports.
import { join } from 'node:path'
import type { CertSet } from '../certs.js'
import { spawnTracked, logTail, stopChild, type TrackedChild } from '../children.js'
import { benchDist } from '../paths.js'
import type { UpstreamArgs, UpstreamReady } from './upstream-server.js'

export interface Upstream {
  readonly httpPort: number
  readonly httpsPorts: UpstreamReady['httpsPorts']
  readonly pid: number
  stop(): Promise<void>
}

/** `httpPort`: a fixed plain HTTP port (the soak restarts the upstream on the same one). */
export async function startUpstream(workDir: string, certs: CertSet, nofile: number, httpPort = 0): Promise<Upstream> {
  const args: UpstreamArgs = { ecdsa: certs.ecdsa, rsa: certs.rsa, httpPort }
  const child: TrackedChild = spawnTracked('upstream', process.execPath, [join(benchDist, 'upstream', 'upstream-server.js'), JSON.stringify(args)], join(workDir, 'upstream.log'), { ipc: true, nofile })
  const ready = await new Promise<UpstreamReady>((resolve, reject) => {
    child.process.once('message', (message) => resolve(message as UpstreamReady))
    child.exited.then(() => reject(new Error(`upstream exited before it was ready:\n${logTail(child)}`)))
  })
  return { httpPort: ready.httpPort, httpsPorts: ready.httpsPorts, pid: child.pid, stop: () => stopChild(child) }
}
