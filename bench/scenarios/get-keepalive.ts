import { httpScenario, type HttpScenarioDef } from './http-scenario.js'

/** Also the load of get-fast-upstream, which sends it to an nginx upstream. */
export const GET_KEEPALIVE: HttpScenarioDef = {
  name: 'get-keepalive',
  title: 'small GET ("hello world\\n"), keep-alive connections',
  https: false,
  newConnectionPerRequest: false,
  method: 'GET',
}

export const getKeepalive = httpScenario(GET_KEEPALIVE)
