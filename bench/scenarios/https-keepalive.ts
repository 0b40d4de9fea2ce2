import { httpScenario } from './http-scenario.js'

export const httpsKeepalive = httpScenario({
  name: 'https-keepalive',
  title: 'small GET over HTTPS (ECDSA P-256 certificate), keep-alive',
  https: true,
  newConnectionPerRequest: false,
  method: 'GET',
})
