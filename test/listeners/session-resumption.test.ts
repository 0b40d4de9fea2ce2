// TLS session resumption on one gateway process: a client that comes back with its session
// skips the full handshake after a reload re-read the certificates, for the default
// certificate and for a name served by an SNI certificate. Node gives each new context random
// ticket keys, so without one set of keys for the whole run a reload would turn every return
// into a full handshake. (Node 20 seals SNI connections' tickets with the tls.Server's keys, so
// SNI alone never broke resumption: the SNI case is here for the reload.)

import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import tls from 'node:tls'
import { describe, expect, it } from 'vitest'
import { createCertificates } from '../../src/listeners/certificate-authority.js'
import { admin } from '../admin/admin-client.js'
import { useTestScope } from '../helpers/test-scope.js'
import { visit } from '../helpers/tls-session.js'
import { httpUpstream } from '../helpers/upstream.js'

const scope = useTestScope()

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'gw-resumption-'))
  scope.defer(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** A gateway with one HTTPS listener (`ide.example.com` on an SNI certificate) and its files. */
async function tlsGateway() {
  const up = await httpUpstream((_req, res) => res.end('ok'))
  scope.defer(() => up.close())
  const dir = tempDir()
  const main = await createCertificates({ outDir: join(dir, 'main'), hosts: ['localhost', '127.0.0.1'] })
  const ide = await createCertificates({ outDir: join(dir, 'ide'), hosts: ['ide.example.com'] })
  const gw = await scope.gateway(up.target, {
    listeners: [{
      name: 'https', port: 0, host: '127.0.0.1',
      tls: { cert: main.cert, key: main.key, sni: [{ hosts: ['ide.example.com'], cert: ide.cert, key: ide.key }] },
    }],
  })
  /** Writes a new certificate and key over the files of `pair` (a renewal), as certbot would. */
  const renew = async (pair: { cert: string; key: string }, hosts: string[]) => {
    const renewed = await createCertificates({ outDir: join(tempDir(), 'renewed'), hosts })
    writeFileSync(pair.cert, readFileSync(renewed.cert))
    writeFileSync(pair.key, readFileSync(renewed.key))
  }
  return { gw, port: gw.port('https'), main, ide, renew }
}

describe.each([
  ['TLS 1.3', undefined],
  ['TLS 1.2', 'TLSv1.2'],
] as const)('with %s', (_name, maxVersion?: tls.SecureVersion) => {
  it('resumes a session issued before a reload that renewed the certificate', async () => {
    const { gw, port, main, renew } = await tlsGateway()
    const first = await visit(port, { maxVersion })
    expect(first).toMatchObject({ reused: false, status: 200 })
    await renew(main, ['localhost', '127.0.0.1'])
    expect((await admin(gw, 'POST', '/reload')).status).toBe(200)
    const back = await visit(port, { maxVersion, session: first.session })
    expect(back).toMatchObject({ reused: true, status: 200 })
  })

  it('resumes a session for a name served by an SNI certificate, also after a reload', async () => {
    const { gw, port, ide, renew } = await tlsGateway()
    const servername = 'ide.example.com'
    const first = await visit(port, { maxVersion, servername })
    expect(first).toMatchObject({ reused: false, status: 200 })
    const back = await visit(port, { maxVersion, servername, session: first.session })
    expect(back).toMatchObject({ reused: true, status: 200 })
    await renew(ide, [servername])
    expect((await admin(gw, 'POST', '/reload')).status).toBe(200)
    const afterReload = await visit(port, { maxVersion, servername, session: back.session })
    expect(afterReload).toMatchObject({ reused: true, status: 200 })
  })
})
