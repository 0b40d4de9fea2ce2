import { mkdtempSync, rmSync } from 'node:fs'
import http from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import tls from 'node:tls'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createCertificates } from '../../src/listeners/certificate-authority.js'
import { admin } from '../admin/admin-client.js'
import { startGateway, type TestGateway } from '../helpers/gateway.js'
import { httpUpstream, type TestServer } from '../helpers/upstream.js'

let dir: string
let up: TestServer<http.Server>
let gw: TestGateway
let port: number

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'gw-tls-policy-'))
  const main = await createCertificates({ outDir: join(dir, 'main'), hosts: ['gateway.example.com'] })
  const ide = await createCertificates({ outDir: join(dir, 'ide'), hosts: ['ide.example.com'] })
  up = await httpUpstream((_req, res) => res.end('ok'))
  gw = await startGateway({
    listeners: [{
      name: 'https', port: 0, host: '127.0.0.1',
      tls: { cert: main.cert, key: main.key, sni: [{ hosts: ['ide.example.com'], cert: ide.cert, key: ide.key }] },
    }],
    upstreams: { master: { targets: [up.target] } },
    routes: [{ id: 'master', pathPrefix: '/', upstream: 'master' }],
  })
  port = gw.port('https')
})
afterAll(async () => {
  await gw?.close()
  await up?.close()
  rmSync(dir, { recursive: true, force: true })
})

interface Handshake {
  protocol: string | null
  cipher: string | null
  /** The client's error code when the handshake failed. */
  error: string | null
}

/** One handshake with the client limited to `options`; the client trusts anything. */
function handshake(options: tls.ConnectionOptions): Promise<Handshake> {
  return new Promise((resolve) => {
    const socket = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...options }, () => {
      const result = { protocol: socket.getProtocol(), cipher: socket.getCipher().standardName, error: null }
      socket.destroy()
      resolve(result)
    })
    socket.on('error', (err: NodeJS.ErrnoException) => resolve({ protocol: null, cipher: null, error: err.code ?? err.message }))
  })
}

// SECLEVEL=0 lets this client offer what OpenSSL 3 would otherwise refuse to send at all, so
// a failure is the gateway's refusal (an alert), not the client declining to ask.
const OLD = { minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' } as const
const TLS12 = { minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2' } as const

describe.each([
  ['the default certificate', undefined],
  ['an SNI certificate', 'ide.example.com'],
])('the HTTPS listener, with %s', (_what, servername) => {
  it('refuses TLS 1.0 and 1.1 with a protocol_version alert', async () => {
    const h = await handshake({ ...OLD, servername })
    expect(h.error).toBe('ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION')
  })

  it('refuses TLS 1.2 CBC suites and static-RSA key exchange', async () => {
    for (const ciphers of ['ECDHE-RSA-AES128-SHA256', 'ECDHE-RSA-AES256-SHA', 'AES128-GCM-SHA256', 'AES256-SHA']) {
      const h = await handshake({ ...TLS12, ciphers, servername })
      expect(h.error, ciphers).toBe('ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE')
    }
  })

  it('serves TLS 1.2 with forward-secret AEAD suites, and TLS 1.3', async () => {
    for (const ciphers of ['ECDHE-RSA-AES128-GCM-SHA256', 'ECDHE-RSA-AES256-GCM-SHA384', 'ECDHE-RSA-CHACHA20-POLY1305']) {
      const h = await handshake({ ...TLS12, ciphers, servername })
      expect(h, ciphers).toMatchObject({ protocol: 'TLSv1.2', error: null })
    }
    const h = await handshake({ servername })
    expect(h).toMatchObject({ protocol: 'TLSv1.3', error: null })
  })

  it('prefers its own suite order over the client\'s', async () => {
    const h = await handshake({ ...TLS12, ciphers: 'ECDHE-RSA-CHACHA20-POLY1305:ECDHE-RSA-AES128-GCM-SHA256', servername })
    expect(h.cipher).toBe('TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256')
  })
})

it('keeps the policy after a reload re-reads the certificates', async () => {
  expect((await admin(gw, 'POST', '/reload')).status).toBe(200)
  expect((await handshake({ ...TLS12, ciphers: 'ECDHE-RSA-AES128-SHA256' })).error).toBe('ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE')
  expect((await handshake({ ...TLS12, ciphers: 'ECDHE-RSA-AES128-SHA256', servername: 'ide.example.com' })).error).toBe('ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE')
  expect((await handshake({ ...OLD })).error).toBe('ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION')
  expect(await handshake({ ...TLS12, ciphers: 'ECDHE-RSA-AES128-GCM-SHA256' })).toMatchObject({ protocol: 'TLSv1.2', error: null })
})
