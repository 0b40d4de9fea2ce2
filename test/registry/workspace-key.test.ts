import { describe, expect, it } from 'vitest'
import { hostKey, pathKey } from '../../src/registry/workspace-key.js'

describe('pathKey', () => {
  it('takes the {port}_{host} first segment as the key', () => {
    expect(pathKey('/32770_node1.example.com/api/project')).toEqual({ key: '32770_node1.example.com' })
    expect(pathKey('/32771_node1/pty')).toEqual({ key: '32771_node1' })
    expect(pathKey('/32771_node1')).toEqual({ key: '32771_node1' })
    expect(pathKey('/32771_10.0.0.7?token=abc')).toEqual({ key: '32771_10.0.0.7' })
  })

  it('lowercases the host', () => {
    expect(pathKey('/32770_Node1.Example.COM/x')).toEqual({ key: '32770_node1.example.com' })
  })

  it('accepts ports 1..65535 only, without leading zeros', () => {
    expect(pathKey('/1_a/')).toEqual({ key: '1_a' })
    expect(pathKey('/65535_a/')).toEqual({ key: '65535_a' })
    for (const bad of ['/0_a/', '/65536_a/', '/080_a/', '/123456_a/', '/_a/', '/x1_a/', '/-1_a/']) {
      expect(pathKey(bad), bad).toBeNull()
    }
  })

  it('refuses segments that are not a DNS name or IPv4 address', () => {
    for (const bad of [
      '/32770_/', '/32770_node_1/', '/32770_node%2e1/', '/32770_-node/', '/32770_node-/',
      '/32770_a..b/', '/32770_.a/', '/32770_a./', '/32770_a b/', `/32770_${'a'.repeat(64)}/`,
      `/32770_${Array(60).fill('abcd').join('.')}/`, '/api/project', '/', '', 'relative_path',
      '/32770_[::1]/',
    ]) {
      expect(pathKey(bad), bad).toBeNull()
    }
  })
})

describe('hostKey', () => {
  const suffix = '.ws.example.com'

  it('is the full lowercased host name when it ends with the suffix', () => {
    expect(hostKey('terminal-dev-w42.ws.example.com', suffix)).toBe('terminal-dev-w42.ws.example.com')
    expect(hostKey('Terminal-Dev-W42.WS.Example.com', suffix)).toBe('terminal-dev-w42.ws.example.com')
  })

  it('strips the port', () => {
    expect(hostKey('terminal-dev-w42.ws.example.com:8443', suffix)).toBe('terminal-dev-w42.ws.example.com')
  })

  it('matches the suffix case-insensitively whatever case the config uses', () => {
    expect(hostKey('a.ws.example.com', '.WS.Example.COM')).toBe('a.ws.example.com')
  })

  it('needs a non-empty name before the suffix', () => {
    expect(hostKey('.ws.example.com', suffix)).toBeNull()
    expect(hostKey('ws.example.com', suffix)).toBeNull()
  })

  it('does not match another host or a suffix that is not on a label boundary', () => {
    expect(hostKey('ide.example.com', suffix)).toBeNull()
    expect(hostKey('evilws.example.com', 'ws.example.com')).toBeNull()
    expect(hostKey('a.ws.example.com', 'ws.example.com')).toBe('a.ws.example.com')
    expect(hostKey('a.ws.example.com.evil.org', suffix)).toBeNull()
  })

  it('refuses hosts with invalid characters, bad ports and IPv6 literals', () => {
    expect(hostKey('a b.ws.example.com', suffix)).toBeNull()
    expect(hostKey('a_b.ws.example.com', suffix)).toBeNull()
    expect(hostKey('a.ws.example.com:', suffix)).toBeNull()
    expect(hostKey('[::1]:80', suffix)).toBeNull()
  })

  it('is off without a suffix', () => {
    expect(hostKey('a.ws.example.com', null)).toBeNull()
    expect(hostKey('a.ws.example.com', '')).toBeNull()
  })
})
