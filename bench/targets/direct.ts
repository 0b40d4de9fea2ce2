// "direct": the upstream itself, no proxy in between. Its rows are the ceiling of what the
// loader and the upstream can do together on this machine; a proxy row near it was limited
// by them, not by the proxy.
import { upstreamPortOf, type RunningTarget, type TargetDriver, type TargetEnv, type TargetSpec } from './target.js'

export const direct: TargetDriver = {
  name: 'direct',
  unavailable: () => null,
  async start(spec: TargetSpec, env: TargetEnv): Promise<RunningTarget> {
    return {
      name: 'direct',
      httpUrl: `http://127.0.0.1:${upstreamPortOf(spec, env)}`,
      httpsUrl: `https://127.0.0.1:${env.upstream.httpsPorts[spec.cert]}`,
      pid: null,
      stop: async () => {},
    }
  },
}
