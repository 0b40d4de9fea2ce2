import { httpScenario } from './http-scenario.js'

export const getKeepalive = httpScenario({
  name: 'get-keepalive',
  title: 'small GET ("hello world\\n"), keep-alive connections',
  https: false,
  newConnectionPerRequest: false,
  method: 'GET',
})
