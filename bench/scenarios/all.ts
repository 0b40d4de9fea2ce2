// Every scenario, in run order (`--scenario` selects by name).
import { accessLog } from './access-log.js'
import { getFastUpstream } from './get-fast-upstream.js'
import { getKeepalive } from './get-keepalive.js'
import { getNewConn } from './get-new-conn.js'
import { httpsKeepalive } from './https-keepalive.js'
import { post64k } from './post-64k.js'
import { routes100k } from './routes-100k.js'
import type { Scenario } from './scenario.js'
import { tlsHandshakes } from './tls-handshakes.js'
import { workspaceRoutes } from './workspace-routes.js'
import { wsEcho } from './ws-echo.js'
import { wsIdle } from './ws-idle.js'

export const scenarios: readonly Scenario[] = [
  getKeepalive,
  getFastUpstream,
  getNewConn,
  post64k,
  httpsKeepalive,
  tlsHandshakes,
  wsEcho,
  wsIdle,
  routes100k,
  workspaceRoutes,
  accessLog,
]
