// autocannon, in the runner's process. Simple and always there, but a Node client: on two
// cores it tops out near 33k req/s, so prefer wrk for keep-alive loads when installed.
import autocannon from 'autocannon'
import type { HttpLoad, HttpLoader, Measurement } from './measurement.js'

export const autocannonLoader: HttpLoader = {
  name: 'autocannon',
  async run(load: HttpLoad): Promise<Measurement> {
    if (load.newConnectionPerRequest) throw new Error('autocannon cannot open a connection per request; use the socket loop')
    const result = await autocannon({
      url: load.url,
      method: load.method,
      body: load.body,
      headers: { ...load.headers, ...(load.body ? { 'content-type': 'application/octet-stream' } : {}) },
      connections: load.connections,
      duration: load.seconds,
      timeout: 10,
    })
    const seconds = result.duration || load.seconds
    return {
      unit: 'req/s',
      value: result.requests.total / seconds,
      higherIsBetter: true,
      p50Ms: result.latency.p50,
      p99Ms: result.latency.p99,
      errors: result.errors,
      non2xx: result.non2xx,
      total: result.requests.total,
      seconds,
      loader: 'autocannon',
    }
  },
}
