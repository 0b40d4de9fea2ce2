import { httpScenario } from './http-scenario.js'

export const post64k = httpScenario({
  name: 'post-64k',
  title: 'POST 64 KiB bodies (upstream answers the byte count), keep-alive',
  https: false,
  newConnectionPerRequest: false,
  method: 'POST',
  bodyBytes: 64 * 1024,
})
