// nginx as a fast upstream (get-fast-upstream): one worker answering every request with
// "hello world\n" from its config, no file or log I/O. The Node upstream tops out near 40k
// req/s on two cores, under which every proxy row looks alike; nginx leaves the proxy as the
// limit. Everything it writes (config, pid, log, temp folders) stays in the run's folder.
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { logTail, spawnTracked, stopChild } from '../children.js'
import { freePort, waitForPort } from '../net-wait.js'
import { onPath } from '../which.js'

export interface Nginx {
  readonly httpPort: number
  stop(): Promise<void>
}

interface NginxConfigInput {
  readonly workDir: string
  readonly port: number
  readonly workerConnections: number
}

export function nginxConfig({ workDir, port, workerConnections }: NginxConfigInput): string {
  const at = (name: string): string => join(workDir, name)
  // master_process off: the process spawned is the one that serves, so the SIGKILL that ends
  // a run which died leaves no orphaned worker holding the port. error_log stderr: the child's
  // log in the run's folder, whose tail a failed start shows. The *_temp_path lines keep nginx
  // off /var/lib/nginx, which is missing or not writable when it is not run as a service.
  return `worker_processes 1;
master_process off;
daemon off;
pid ${at('nginx.pid')};
error_log stderr warn;

events {
  worker_connections ${workerConnections};
}

http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path ${at('nginx-body')};
  proxy_temp_path ${at('nginx-proxy')};
  fastcgi_temp_path ${at('nginx-fastcgi')};
  uwsgi_temp_path ${at('nginx-uwsgi')};
  scgi_temp_path ${at('nginx-scgi')};

  server {
    listen 127.0.0.1:${port};
    location / {
      return 200 "hello world\\n";
    }
  }
}
`
}

/** Null when nginx can run here, else why not. */
export function nginxUnavailable(): string | null {
  return onPath('nginx') ? null : 'nginx not on PATH (apt-get install nginx-light)'
}

/** `connections`: the scenario's client connections, which each proxy may mirror upstream. */
export async function startNginx(workDir: string, connections: number): Promise<Nginx> {
  const httpPort = await freePort()
  const file = join(workDir, 'nginx.conf')
  // Room for the loaded target's connections plus the idle pools the targets before it left.
  await writeFile(file, nginxConfig({ workDir, port: httpPort, workerConnections: Math.max(1024, 4 * connections) }))
  const child = spawnTracked('nginx', 'nginx', ['-c', file], join(workDir, 'nginx.log'))
  try {
    await waitForPort(httpPort, { deadlineMs: 10_000, exited: child.exited, what: 'nginx' })
  } catch (err) {
    await stopChild(child)
    throw new Error(`${(err as Error).message}\n${logTail(child)}`)
  }
  return { httpPort, stop: () => stopChild(child) }
}
