// Route lookup cost for 10, 1k and 100k static routes: it must stay flat (map probes per
// host candidate and path segment, never a scan of the route list).

import { RouteTable } from '../../src/routing/route-table.js'
import { nsPerOp, row } from '../micro-timing.js'

function table(n: number): RouteTable<{ id: string; host?: string; pathPrefix: string }> {
  const routes: { id: string; host?: string; pathPrefix: string }[] = [
    { id: 'master', pathPrefix: '/' },
    { id: 'binaries', pathPrefix: '/agent-binaries' },
  ]
  for (let i = 0; i < n - 2; i++) routes.push({ id: `r${i}`, host: `h${i % 1000}.example.com`, pathPrefix: `/svc${i}/api` })
  return new RouteTable(routes)
}

process.stdout.write('route lookup (RouteTable.match)\n')
for (const n of [10, 1_000, 100_000]) {
  const t = table(n)
  const mid = Math.floor((n - 2) / 2)
  const host = `h${mid % 1000}.example.com`
  const path = `/svc${mid}/api/v1/items?x=1`.split('?')[0]
  const hit = nsPerOp(() => t.match(host, path))
  const fallthrough = nsPerOp(() => t.match('ide.example.com', '/dashboard/workspaces/w1'))
  process.stdout.write(`${row(`${n} routes, host+prefix hit`, hit)}\n${row(`${n} routes, fall through to "/"`, fallthrough)}\n`)
}
