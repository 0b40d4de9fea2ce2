import { X509Certificate, createPrivateKey } from 'node:crypto'
import { once } from 'node:events'
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { connect, createServer, type Server } from 'node:tls'
import forge from 'node-forge'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createCertificates, ensureCertificates, type CertificateFiles } from '../../src/listeners/certificate-authority.js'

let dir: string
let files: CertificateFiles
let ca: X509Certificate
let cert: X509Certificate

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'gw-ca-'))
  files = await createCertificates({ outDir: join(dir, 'out'), hosts: ['gateway.example.com', '*.ws.example.com', '127.0.0.1', '::1'] })
  ca = new X509Certificate(await readFile(files.caCert))
  cert = new X509Certificate(await readFile(files.cert))
})
afterAll(async () => { await rm(dir, { recursive: true, force: true }) })

describe('createCertificates', () => {
  it('writes a CA and a server certificate signed by it', () => {
    expect(ca.ca).toBe(true)
    expect(cert.ca).toBe(false)
    expect(ca.verify(ca.publicKey)).toBe(true)
    expect(cert.verify(ca.publicKey)).toBe(true)
    expect(cert.checkIssued(ca)).toBe(true)
  })

  it('puts every host in the subject alternative names', () => {
    expect(cert.subjectAltName?.split(', ')).toEqual([
      'DNS:gateway.example.com', 'DNS:*.ws.example.com', 'IP Address:127.0.0.1', 'IP Address:0:0:0:0:0:0:0:1',
    ])
    expect(cert.checkHost('foo.ws.example.com')).toBe('*.ws.example.com')
    expect(cert.checkIP('::1')).toBe('::1')
  })

  it('makes an SHA-256, RSA 2048, serverAuth certificate', () => {
    expect(cert.keyUsage).toEqual(['1.3.6.1.5.5.7.3.1'])
    expect(cert.publicKey.asymmetricKeyDetails?.modulusLength).toBe(2048)
    const parsed = forge.pki.certificateFromPem(cert.toString())
    expect(parsed.siginfo.algorithmOid).toBe(forge.pki.oids.sha256WithRSAEncryption)
  })

  it('is valid from an hour ago for 825 days at most, which Apple platforms accept', () => {
    const from = Date.parse(cert.validFrom)
    const to = Date.parse(cert.validTo)
    expect(Date.now() - from).toBeGreaterThanOrEqual(59 * 60 * 1000)
    expect(to - from).toBeLessThanOrEqual(825 * 24 * 60 * 60 * 1000)
    expect(to - from).toBeGreaterThan(824 * 24 * 60 * 60 * 1000)
  })

  it('writes the keys readable by the owner only', async () => {
    expect((await stat(files.key)).mode & 0o777).toBe(0o600)
    expect((await stat(files.caKey)).mode & 0o777).toBe(0o600)
    expect(createPrivateKey(await readFile(files.key)).asymmetricKeyType).toBe('rsa')
  })

  it('refuses to overwrite existing files', async () => {
    const before = await readFile(files.key, 'utf8')
    await expect(createCertificates({ outDir: join(dir, 'out'), hosts: ['a.example.com'] })).rejects.toThrow(/already exists/)
    expect(await readFile(files.key, 'utf8')).toBe(before)
  })

  it('rejects a host that is neither a name nor an address', async () => {
    await expect(createCertificates({ outDir: join(dir, 'bad'), hosts: ['not a host'] })).rejects.toThrow(/not a host name/)
  })

  describe('a TLS server using the certificate', () => {
    let server: Server
    let port: number
    beforeAll(async () => {
      server = createServer({ cert: await readFile(files.cert), key: await readFile(files.key) }, (socket) => socket.end('hello'))
      server.listen(0, '127.0.0.1')
      await once(server, 'listening')
      port = (server.address() as AddressInfo).port
    })
    afterAll(async () => {
      server.close()
      await once(server, 'close')
    })

    async function handshake(servername: string | undefined): Promise<string> {
      const socket = connect({ host: '127.0.0.1', port, servername, ca: await readFile(files.caCert) })
      try {
        await once(socket, 'secureConnect')
        const [data] = await once(socket, 'data') as [Buffer]
        return data.toString()
      } finally {
        socket.destroy()
      }
    }

    it('is trusted by a client that trusts the CA, for a workspace host name', async () => {
      expect(await handshake('foo.ws.example.com')).toBe('hello')
    })

    it('is trusted by a client that trusts the CA, for 127.0.0.1', async () => {
      expect(await handshake(undefined)).toBe('hello')
    })

    it('is refused for a name it does not carry', async () => {
      await expect(handshake('other.example.org')).rejects.toThrow(/altnames|Hostname/i)
    })
  })
})

describe('ensureCertificates', () => {
  it('creates a pair and a CA beside it when both files are missing, once', async () => {
    const tlsDir = join(dir, 'ensure')
    const pair = { cert: join(tlsDir, 'gateway.crt'), key: join(tlsDir, 'gateway.key') }
    const created = await ensureCertificates([pair, pair], ['localhost', '127.0.0.1'])
    expect(created.sort()).toEqual([join(tlsDir, 'ca.crt'), join(tlsDir, 'ca.key'), pair.cert, pair.key].sort())
    const made = new X509Certificate(await readFile(pair.cert))
    expect(made.verify(new X509Certificate(await readFile(join(tlsDir, 'ca.crt'))).publicKey)).toBe(true)
    expect((await stat(pair.key)).mode & 0o777).toBe(0o600)
    expect(await ensureCertificates([pair], ['localhost'])).toEqual([])
  })

  it('signs a new pair with the CA already in the folder', async () => {
    const tlsDir = join(dir, 'ensure')
    const caBefore = await readFile(join(tlsDir, 'ca.crt'), 'utf8')
    const pair = { cert: join(tlsDir, 'second.crt'), key: join(tlsDir, 'second.key') }
    expect(await ensureCertificates([pair], ['localhost'])).toEqual([pair.cert, pair.key])
    expect(await readFile(join(tlsDir, 'ca.crt'), 'utf8')).toBe(caBefore)
    expect(new X509Certificate(await readFile(pair.cert)).checkIssued(new X509Certificate(caBefore))).toBe(true)
  })

  it('throws naming the missing key when only the certificate exists, and writes nothing', async () => {
    const cert = join(dir, 'half.crt')
    await writeFile(cert, 'operator certificate')
    const key = join(dir, 'half.key')
    await expect(ensureCertificates([{ cert, key }], ['localhost'])).rejects.toThrow(key)
    expect(await readFile(cert, 'utf8')).toBe('operator certificate')
    await expect(stat(key)).rejects.toThrow()
  })

  it('throws naming the missing certificate when only the key exists', async () => {
    const key = join(dir, 'lonely.key')
    await writeFile(key, 'operator key')
    const cert = join(dir, 'lonely.crt')
    await expect(ensureCertificates([{ cert, key }], ['localhost'])).rejects.toThrow(cert)
    expect(await readFile(key, 'utf8')).toBe('operator key')
  })
})
