// "direct": the upstream itself, no proxy in between. Its rows are the ceiling of what the
// loader and the upstream can do together on this machine; a proxy row near it was limited
// by them, not by the proxy.
import type { RunningTarget, TargetDriver, TargetEnv, TargetSpec } from './target.js'

export const direct: TargetDriver = {
  name: 'direct',
  unavailable: () => null,
  async start(spec: TargetSpec, env: TargetEnv): Promise<RunningTarget> {
    return {
      name: 'direct',
      httpUrl: `http://127.0.0.1:${env.upstream.httpPort}`,
      httpsUrl: `https://127.0.0.1:${env.upstream.httpsPorts[spec.cert]}`,
      pid: null,
      stop: async () => {},
    }
  },
}
