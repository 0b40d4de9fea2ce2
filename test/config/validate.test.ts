import { describe, expect, it } from 'vitest'
import { applyDefaults, DEFAULTS } from '../../src/config/defaults.js'
import { isForbiddenTarget, parseTarget, validateConfig, validateRoute, validateRoutes } from '../../src/config/validate.js'

/** The issues for a user config (defaults applied, as the loader does). */
function issuesFor(user: Record<string, unknown>) {
  return validateConfig(applyDefaults(user))
}

function pathsFor(user: Record<string, unknown>): string[] {
  return issuesFor(user).map((issue) => issue.path)
}

const listener = (extra: Record<string, unknown> = {}) => ({ name: 'l', port: 8080, ...extra })
const route = (extra: Record<string, unknown> = {}) => ({ id: 'r', upstream: 'master', ...extra })

describe('validateConfig', () => {
  it('accepts the defaults and an empty user config', () => {
    expect(validateConfig(DEFAULTS)).toEqual([])
    expect(issuesFor({})).toEqual([])
  })

  it('rejects a config that is not an object', () => {
    expect(validateConfig([])).toEqual([{ path: '', message: expect.stringContaining('must be a JSON object') }])
  })

  it('names an unknown key by its path and suggests the near miss', () => {
    const issues = issuesFor({ listeners: [listener({ prot: 80 })], timeout: {} })
    expect(issues).toContainEqual({ path: 'listeners[0].prot', message: expect.stringContaining('did you mean "port"') })
    expect(issues.map((i) => i.path)).toContain('timeout')
  })

  it('rejects unknown keys at every depth', () => {
    expect(pathsFor({ workspaces: { registry: { urll: null } } })).toEqual(['workspaces.registry.urll'])
    expect(pathsFor({ admin: { tls: true } })).toEqual(['admin.tls'])
    expect(pathsFor({ upstreams: { master: { targets: ['a:1'], weight: 2 } }, routes: [] })).toEqual(['upstreams.master.weight'])
  })

  it('collects every error instead of stopping at the first', () => {
    const paths = pathsFor({
      listeners: [listener({ port: -1 }), listener({ name: '', port: 'x' })],
      timeouts: { connectMs: 0, headersMs: 1.5 },
      workers: 0,
    })
    expect(paths).toEqual(expect.arrayContaining([
      'listeners[0].port', 'listeners[1].name', 'listeners[1].port', 'timeouts.connectMs', 'timeouts.headersMs', 'workers',
    ]))
  })

  it('quotes the bad value in the message', () => {
    expect(issuesFor({ listeners: [listener({ port: 'eighty' })] })).toEqual([
      { path: 'listeners[0].port', message: 'must be an integer from 0 to 65535, got "eighty"' },
    ])
  })

  describe('listeners', () => {
    it('accepts ports 0 to 65535 and rejects others', () => {
      expect(issuesFor({ listeners: [listener({ port: 0 }), listener({ name: 'm', port: 65535 })] })).toEqual([])
      expect(pathsFor({ listeners: [listener({ port: 65536 })] })).toEqual(['listeners[0].port'])
      expect(pathsFor({ listeners: [listener({ port: 80.5 })] })).toEqual(['listeners[0].port'])
    })

    it('requires name and port', () => {
      expect(pathsFor({ listeners: [{ host: '0.0.0.0' }] })).toEqual(['listeners[0].name', 'listeners[0].port'])
    })

    it('rejects an empty and a duplicate listener name', () => {
      expect(pathsFor({ listeners: [listener({ name: '' })] })).toEqual(['listeners[0].name'])
      expect(pathsFor({ listeners: [listener({ port: 1 }), listener({ port: 2 })] })).toEqual(['listeners[1].name'])
    })

    it('rejects two listeners on the same host and port', () => {
      const issues = issuesFor({ listeners: [listener({ name: 'a' }), listener({ name: 'b' })] })
      expect(issues.map((i) => i.path)).toEqual(['listeners[1].port'])
      expect(issues[0].message).toContain('listeners[0]')
    })

    it('rejects a specific address on a port a wildcard listener already binds', () => {
      expect(pathsFor({ listeners: [listener({ name: 'a' }), listener({ name: 'b', host: '127.0.0.1' })] }))
        .toEqual(['listeners[1].port'])
    })

    it('rejects a listener on the admin port', () => {
      expect(pathsFor({ listeners: [listener({ port: 9090 })] })).toEqual(['admin.port'])
    })

    it('lets any number of listeners share port 0 (each gets its own ephemeral port)', () => {
      expect(issuesFor({ listeners: [listener({ name: 'a', port: 0 }), listener({ name: 'b', port: 0 })] })).toEqual([])
    })

    it('rejects a bind host that is neither an address nor a host name', () => {
      expect(pathsFor({ listeners: [listener({ host: 'http://x' })] })).toEqual(['listeners[0].host'])
    })

    it('checks tls and sni entries', () => {
      expect(pathsFor({ listeners: [listener({ tls: { cert: 'a.crt' } })] })).toEqual(['listeners[0].tls.key'])
      expect(pathsFor({
        listeners: [listener({ tls: { cert: 'a', key: 'b', sni: [{ hosts: ['ok.example.com', 'bad host'], cert: 'c', key: '' }] } })],
      })).toEqual(['listeners[0].tls.sni[0].hosts[1]', 'listeners[0].tls.sni[0].key'])
    })

    it('accepts a listener name of 128 characters and refuses 129, saying so', () => {
      expect(issuesFor({ listeners: [listener({ name: 'l'.repeat(128) })] })).toEqual([])
      expect(issuesFor({ listeners: [listener({ name: 'l'.repeat(129) })] })).toEqual([
        { path: 'listeners[0].name', message: `must be at most 128 characters (it has 129), got "${'l'.repeat(56)}...` },
      ])
    })

    it('rejects a non-boolean workspacesOnly', () => {
      expect(pathsFor({ listeners: [listener({ workspacesOnly: 'yes' })] })).toEqual(['listeners[0].workspacesOnly'])
    })

    it('checks redirectToHttps, and refuses it on an HTTPS listener', () => {
      expect(issuesFor({ listeners: [listener({ redirectToHttps: {} }), listener({ name: 'm', port: 8081, redirectToHttps: { port: 8443, permanent: true } })] })).toEqual([])
      expect(applyDefaults({ listeners: [listener({ redirectToHttps: { permanent: true } })] })).toMatchObject({
        listeners: [{ redirectToHttps: { port: 443, permanent: true } }],
      })
      expect(pathsFor({ listeners: [listener({ redirectToHttps: { port: 0 } })] })).toEqual(['listeners[0].redirectToHttps.port'])
      expect(pathsFor({ listeners: [listener({ redirectToHttps: { prot: 443 } })] })).toEqual(['listeners[0].redirectToHttps.prot'])
      expect(pathsFor({ listeners: [listener({ redirectToHttps: true })] })).toEqual(['listeners[0].redirectToHttps'])
      expect(issuesFor({ listeners: [listener({ tls: { cert: 'a', key: 'b' }, redirectToHttps: {} })] })).toEqual([{
        path: 'listeners[0].redirectToHttps',
        message: expect.stringContaining('HTTPS listener'),
      }])
    })
  })

  describe('upstreams', () => {
    it('requires non-empty targets', () => {
      expect(pathsFor({ upstreams: { master: { targets: [] }, agents: { targets: ['a:1'] } } })).toEqual(['upstreams.master.targets'])
    })

    it('names the bad target by its index', () => {
      expect(pathsFor({ upstreams: { master: { targets: ['a:1', 'nope'] }, agents: { targets: ['a:1'] } } }))
        .toEqual(['upstreams.master.targets[1]'])
    })

    it('rejects an unknown balance strategy', () => {
      expect(pathsFor({ upstreams: { master: { targets: ['a:1'], balance: 'random' }, agents: { targets: ['a:1'] } } }))
        .toEqual(['upstreams.master.balance'])
    })

    it('rejects an upstream name with odd characters', () => {
      expect(pathsFor({ upstreams: { 'my upstream': { targets: ['a:1'] } }, routes: [] })).toEqual(['upstreams["my upstream"]'])
    })

    it('accepts an upstream name of 128 characters and refuses 129, saying so', () => {
      const ok = 'u'.repeat(128)
      expect(issuesFor({ upstreams: { [ok]: { targets: ['a:1'] } }, routes: [route({ upstream: ok })] })).toEqual([])
      const long = 'u'.repeat(129)
      expect(issuesFor({ upstreams: { [long]: { targets: ['a:1'] } }, routes: [] })).toEqual([
        { path: `upstreams.${long}`, message: `must be at most 128 characters (it has 129), got "${'u'.repeat(56)}...` },
      ])
    })

    it('replaces the default upstreams, so routes naming a dropped one fail', () => {
      expect(pathsFor({ upstreams: { master: { targets: ['a:1'] } } })).toEqual(['routes[0].upstream'])
    })
  })

  describe('routes', () => {
    it('takes allowHttp as a boolean only', () => {
      expect(issuesFor({ routes: [route({ allowHttp: true })] })).toEqual([])
      expect(pathsFor({ routes: [route({ allowHttp: 'yes' })] })).toEqual(['routes[0].allowHttp'])
    })

    it('rejects an empty, malformed or duplicate route id', () => {
      expect(pathsFor({ routes: [route({ id: '' })] })).toEqual(['routes[0].id'])
      expect(pathsFor({ routes: [route({ id: 'a/b' })] })).toEqual(['routes[0].id'])
      expect(pathsFor({ routes: [route({ pathPrefix: '/a' }), route({ pathPrefix: '/b' })] })).toEqual(['routes[1].id'])
    })

    it('accepts a route id of 128 characters and refuses 129, saying so', () => {
      expect(issuesFor({ routes: [route({ id: 'r'.repeat(128) })] })).toEqual([])
      expect(issuesFor({ routes: [route({ id: 'r'.repeat(129) })] })).toEqual([
        { path: 'routes[0].id', message: `must be at most 128 characters (it has 129), got "${'r'.repeat(56)}...` },
      ])
    })

    it('accepts a pathPrefix of 8192 characters and refuses 8193, saying so', () => {
      const prefix = (length: number) => `/${'p'.repeat(length - 1)}`
      expect(issuesFor({ routes: [route({ pathPrefix: prefix(8192) })] })).toEqual([])
      expect(issuesFor({ routes: [route({ pathPrefix: prefix(8193) })] })).toEqual([
        { path: 'routes[0].pathPrefix', message: `must be at most 8192 characters (it has 8193), got "/${'p'.repeat(55)}...` },
      ])
    })

    it('requires pathPrefix to start with "/" and carry no query, fragment or space', () => {
      for (const pathPrefix of ['api', '/a?b', '/a#b', '/a b']) {
        expect(pathsFor({ routes: [route({ pathPrefix })] })).toEqual(['routes[0].pathPrefix'])
      }
    })

    it('accepts exact hosts, IP addresses and *.suffix wildcards', () => {
      const hosts = ['ide.example.com', '*.example.com', '10.0.0.1', '[::1]', 'localhost']
      expect(issuesFor({ routes: hosts.map((host, i) => route({ id: `r${i}`, host })) })).toEqual([])
    })

    it('rejects malformed hosts', () => {
      for (const host of ['*', 'a..b', 'exa mple.com', '*.', 'ide.example.com:443', 'http://x', '-a.com']) {
        expect(pathsFor({ routes: [route({ host })] }), host).toEqual(['routes[0].host'])
      }
    })

    it('requires exactly one of upstream and targets', () => {
      expect(pathsFor({ routes: [{ id: 'r' }] })).toEqual(['routes[0]'])
      expect(pathsFor({ routes: [route({ targets: ['a:1'] })] })).toEqual(['routes[0]'])
      expect(issuesFor({ routes: [{ id: 'r', targets: ['a:1'] }] })).toEqual([])
    })

    it('rejects empty targets and an upstream that does not exist', () => {
      expect(pathsFor({ routes: [{ id: 'r', targets: [] }] })).toEqual(['routes[0].targets'])
      expect(pathsFor({ routes: [route({ upstream: 'mastr' })] })).toEqual(['routes[0].upstream'])
    })

    it('rejects a route that an earlier one shadows', () => {
      expect(pathsFor({ routes: [route({ id: 'a', pathPrefix: '/x' }), route({ id: 'b', pathPrefix: '/x' })] }))
        .toEqual(['routes[1].pathPrefix'])
    })
  })

  describe('targets', () => {
    const withTarget = (target: string, allowMetadataTargets = false) =>
      issuesFor({ routes: [{ id: 'r', targets: [target] }], admin: { allowMetadataTargets } })

    it('accepts host names, IPv4 and bracketed IPv6', () => {
      for (const target of ['node1:32770', 'node1.example.com:1', '10.0.0.5:65535', '[::1]:8080', '[2001:db8::1]:443']) {
        expect(withTarget(target), target).toEqual([])
      }
    })

    it('rejects malformed targets at their path', () => {
      for (const target of ['node1', 'node1:0', 'node1:65536', 'node1:http', '::1:80', '[::1]', 'a b:1', ':80', 'http://a:1']) {
        expect(withTarget(target).map((i) => i.path), target).toEqual(['routes[0].targets[0]'])
      }
    })

    it('rejects numeric IPv4 spellings other than dotted decimal', () => {
      expect(withTarget('10.1:80').map((i) => i.path)).toEqual(['routes[0].targets[0]'])
    })

    it('rejects metadata targets and names the path', () => {
      const issues = withTarget('169.254.169.254:80')
      expect(issues).toEqual([{ path: 'routes[0].targets[0]', message: expect.stringContaining('allowMetadataTargets') }])
    })

    it('rejects metadata targets in upstreams too', () => {
      expect(pathsFor({ upstreams: { master: { targets: ['[fe80::1]:80'] }, agents: { targets: ['a:1'] } } }))
        .toEqual(['upstreams.master.targets[0]'])
    })

    it('allows metadata targets when admin.allowMetadataTargets is true', () => {
      expect(withTarget('169.254.169.254:80', true)).toEqual([])
      expect(withTarget('[fd00:ec2::254]:80', true)).toEqual([])
    })
  })

  describe('timeouts and limits', () => {
    it('requires positive integer timeouts', () => {
      expect(pathsFor({ timeouts: { tunnelIdleMs: -5 } })).toEqual(['timeouts.tunnelIdleMs'])
      expect(pathsFor({ timeouts: { keepAliveMs: '60s' } })).toEqual(['timeouts.keepAliveMs'])
      expect(pathsFor({ timeouts: { upstreamIdleMs: 0 } })).toEqual(['timeouts.upstreamIdleMs'])
    })

    it('rejects a timeout beyond what a Node timer can hold', () => {
      expect(pathsFor({ timeouts: { tunnelIdleMs: 2 ** 31 } })).toEqual(['timeouts.tunnelIdleMs'])
    })

    it('requires positive integer limits, except maxConnectionsPerClient which may be 0', () => {
      expect(pathsFor({ limits: { maxBodyBytes: 0 } })).toEqual(['limits.maxBodyBytes'])
      expect(pathsFor({ limits: { maxHeaderCount: null } })).toEqual(['limits.maxHeaderCount'])
      expect(issuesFor({ limits: { maxConnectionsPerClient: 0 } })).toEqual([])
      expect(pathsFor({ limits: { maxConnectionsPerClient: -1 } })).toEqual(['limits.maxConnectionsPerClient'])
    })
  })

  describe('workspaces', () => {
    it('accepts a null or http(s) registry url', () => {
      expect(issuesFor({ workspaces: { registry: { url: 'https://master:8443/api/gateway' } } })).toEqual([])
      expect(pathsFor({ workspaces: { registry: { url: 'ftp://master' } } })).toEqual(['workspaces.registry.url'])
      expect(pathsFor({ workspaces: { registry: { url: 'master:8080' } } })).toEqual(['workspaces.registry.url'])
      expect(pathsFor({ workspaces: { registry: { url: 42 } } })).toEqual(['workspaces.registry.url'])
    })

    it('rejects a registry token that would break the Authorization header', () => {
      expect(pathsFor({ workspaces: { registry: { token: 'a\r\nb' } } })).toEqual(['workspaces.registry.token'])
    })

    it('requires hostSuffix to be null or start with "."', () => {
      expect(issuesFor({ workspaces: { hostSuffix: '.ws.example.com' } })).toEqual([])
      expect(pathsFor({ workspaces: { hostSuffix: 'ws.example.com' } })).toEqual(['workspaces.hostSuffix'])
    })

    it('rejects a cookie name that is not a token', () => {
      expect(pathsFor({ workspaces: { stripCookies: ['ok', 'bad;name'] } })).toEqual(['workspaces.stripCookies[1]'])
    })
  })

  describe('workers and accessLog', () => {
    it('accepts a positive integer or "auto" for workers', () => {
      expect(issuesFor({ workers: 'auto' })).toEqual([])
      expect(issuesFor({ workers: 4 })).toEqual([])
      expect(pathsFor({ workers: 'all' })).toEqual(['workers'])
      expect(pathsFor({ workers: -2 })).toEqual(['workers'])
    })

    it('checks the access log keys', () => {
      expect(pathsFor({ accessLog: { enabled: 'yes', path: '' } })).toEqual(['accessLog.enabled', 'accessLog.path'])
    })
  })

  describe('admin', () => {
    it('checks port, token and tokenFile', () => {
      expect(pathsFor({ admin: { port: 70000, token: '', tokenFile: 5 } })).toEqual(['admin.port', 'admin.token', 'admin.tokenFile'])
    })
  })
})

describe('validateRoutes (admin API bodies)', () => {
  const upstreams = new Set(['master'])

  it('accepts routes without pathPrefix (it defaults to "/")', () => {
    expect(validateRoutes([{ id: 'a', upstream: 'master' }], 'routes', upstreams, false)).toEqual([])
  })

  it('reports paths under the given prefix', () => {
    const issues = validateRoutes([
      { id: 'a', upstream: 'master', pathPrefix: '/a' }, { id: 'a', targets: ['169.254.169.254:80'], pathPrefix: '/b' },
    ], 'routes', upstreams, false)
    expect(issues.map((i) => i.path)).toEqual(['routes[1].targets[0]', 'routes[1].id'])
  })

  it('rejects a body that is not an array', () => {
    expect(validateRoutes({ id: 'a' }, 'routes', upstreams, false).map((i) => i.path)).toEqual(['routes'])
  })

  it('checks one route, with or without a path prefix', () => {
    expect(validateRoute({ id: 'a', upstream: 'x' }, '', upstreams, false)).toEqual([
      { path: 'upstream', message: expect.stringContaining('"x"') },
    ])
    expect(validateRoute({ id: 'a', upstream: 'master', extra: 1 }, 'route', upstreams, false).map((i) => i.path))
      .toEqual(['route.extra'])
  })
})

describe('isForbiddenTarget', () => {
  it.each([
    '169.254.169.254', '169.254.0.1', '2852039166', '0xa9fea9fe', '0XA9FEA9FE', '0251.0376.0251.0376',
    '0xa9.0xfe.0xa9.0xfe', '169.254.43518', '169.16689662', '[::ffff:a9fe:a9fe]', '[::ffff:169.254.169.254]',
    '::ffff:169.254.169.254', 'fe80::1', '[fe80::1%eth0]', 'febf::1', 'fd00:ec2::254', '[FD00:EC2:0:0:0:0:0:254]',
    '100.100.100.200', '64:ff9b::a9fe:a9fe', 'metadata.google.internal', '169.254.169.254.',
  ])('forbids %s', (host) => {
    expect(isForbiddenTarget(host)).toBe(true)
  })

  it.each([
    '10.0.0.1', '127.0.0.1', '169.253.255.255', '169.255.0.0', '100.100.100.201', 'fec0::1', 'fd00:ec2::253',
    '::1', '[::ffff:10.0.0.1]', 'node1.example.com', '169-254-169-254.example.com', '0x7f000001',
  ])('allows %s', (host) => {
    expect(isForbiddenTarget(host)).toBe(false)
  })
})

describe('parseTarget', () => {
  it('splits host and port, unbracketing IPv6', () => {
    expect(parseTarget('node1:32770')).toEqual({ host: 'node1', port: 32770 })
    expect(parseTarget('[::1]:8080')).toEqual({ host: '::1', port: 8080 })
    expect(parseTarget('node1')).toBeNull()
  })
})
