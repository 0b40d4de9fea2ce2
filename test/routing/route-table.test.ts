import { describe, expect, it } from 'vitest'
import { RouteTable, hostName } from '../../src/routing/route-table.js'

const table = new RouteTable([
  { id: 'master', pathPrefix: '/' },
  { id: 'binaries', pathPrefix: '/agent-binaries' },
  { id: 'api-v2', pathPrefix: '/api/v2/' },
  { id: 'ide-exact', host: 'ide.example.com', pathPrefix: '/' },
  { id: 'ide-exact-api', host: 'ide.example.com', pathPrefix: '/api' },
  { id: 'wild', host: '*.example.com', pathPrefix: '/w' },
  { id: 'wild-deep', host: '*.eu.example.com', pathPrefix: '/w' },
])
const m = (host: string | null, path: string) => table.match(host, path)?.id ?? null

describe('route table', () => {
  it('matches the longest prefix on a segment boundary only', () => {
    expect(m(null, '/agent-binaries')).toBe('binaries')
    expect(m(null, '/agent-binaries/linux/agent.tgz')).toBe('binaries')
    expect(m(null, '/agent-binariesX')).toBe('master')
    expect(m(null, '/agent-binaries-old/x')).toBe('master')
    expect(m(null, '/api/v2')).toBe('api-v2')
    expect(m(null, '/api/v2/x')).toBe('api-v2')
    expect(m(null, '/api/v3')).toBe('master')
  })

  it('prefers the exact host, then the wildcard host, then any host', () => {
    expect(m('ide.example.com', '/api/x')).toBe('ide-exact-api')
    expect(m('IDE.Example.com:443', '/other')).toBe('ide-exact')
    expect(m('a.example.com', '/w/x')).toBe('wild')
    expect(m('a.eu.example.com', '/w')).toBe('wild-deep')
    expect(m('a.example.com', '/elsewhere')).toBe('master')
    expect(m('example.com', '/w')).toBe('master')
  })

  it('lets a later route with the same host and prefix win (admin over config)', () => {
    const t = new RouteTable([{ id: 'a', pathPrefix: '/x' }, { id: 'b', pathPrefix: '/x/' }])
    expect(t.match(null, '/x/y')?.id).toBe('b')
  })

  it('answers null when nothing matches', () => {
    expect(new RouteTable([{ id: 'a', pathPrefix: '/a' }]).match(null, '/b')).toBeNull()
  })

  it('keeps lookup independent of the number of routes (100k routes)', () => {
    const routes = Array.from({ length: 100_000 }, (_, i) => ({ id: `r${i}`, host: `h${i % 1000}.example.com`, pathPrefix: `/p${i}` }))
    const big = new RouteTable(routes)
    expect(big.match('h7.example.com', '/p50007/x')?.id).toBe('r50007')
    expect(big.match('h8.example.com', '/p50007/x')).toBeNull()
  })

  it('reduces Host to a lower-case name without the port', () => {
    expect(hostName('Example.COM:8080')).toBe('example.com')
    expect(hostName('[::1]:80')).toBe('[::1]')
    expect(hostName('plain')).toBe('plain')
  })
})
