import { httpScenario } from './http-scenario.js'

// `Connection: close` on every request: the cost of accepting and tearing down a client
// connection, while each proxy keeps its upstream connections pooled.
export const getNewConn = httpScenario({
  name: 'get-new-conn',
  title: 'small GET, a new client connection per request',
  https: false,
  newConnectionPerRequest: true,
  method: 'GET',
  directIsCeiling: false,
  notes: ['direct accepts every connection in Node; a proxy that accepts faster and reuses pooled upstream connections can beat it'],
})
