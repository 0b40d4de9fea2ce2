// Self-signed certificates for a first start and for `gateway certs`: a local CA and a server
// certificate it signs, so an operator trusts one CA file instead of clicking through a
// warning per host name. Keys come from node:crypto (OpenSSL makes an RSA 2048 key in tens of
// milliseconds; node-forge's JavaScript keygen takes seconds) and node-forge builds and signs
// the X.509 structures.

import { generateKeyPairSync, randomBytes } from 'node:crypto'
import { access, mkdir, readFile, rename, unlink, writeFile } from 'node:fs/promises'
import { hostname } from 'node:os'
import { basename, dirname, extname, join, resolve } from 'node:path'
import { isIP, isIPv4 } from 'node:net'
import forge from 'node-forge'

const { pki } = forge

export interface CertificateFiles {
  readonly caCert: string
  readonly caKey: string
  readonly cert: string
  readonly key: string
}

export interface CreateCertificatesOptions {
  /** Folder the four files are written to (created if missing). */
  readonly outDir: string
  /** Server certificate names: DNS names, wildcards ("*.ws.example.com"), IPv4 or IPv6 addresses. */
  readonly hosts: readonly string[]
  /**
   * Server certificate lifetime in days, from notBefore to notAfter. Default 825: Apple
   * platforms (iOS 13, macOS 10.15 and later) refuse a TLS server certificate valid longer.
   */
  readonly days?: number
}

const DEFAULT_DAYS = 825
const CA_DAYS = 3650
// Client clocks run behind; a certificate valid from "now" fails on them for a while.
const BACKDATE_MS = 60 * 60 * 1000

/**
 * Writes `ca.crt`, `ca.key`, `gateway.crt` and `gateway.key` into `outDir`. Refuses to
 * overwrite: if any of them exists, throws naming it and writes nothing.
 */
export async function createCertificates(options: CreateCertificatesOptions): Promise<CertificateFiles> {
  const outDir = resolve(options.outDir)
  const files: CertificateFiles = {
    caCert: join(outDir, 'ca.crt'),
    caKey: join(outDir, 'ca.key'),
    cert: join(outDir, 'gateway.crt'),
    key: join(outDir, 'gateway.key'),
  }
  const sans = subjectAltNames(options.hosts)
  const days = lifetime(options.days)
  for (const file of Object.values(files)) {
    if (await exists(file)) throw new Error(`${file} already exists; remove it or choose another --out folder`)
  }
  const ca = createAuthority()
  const server = issueServerCertificate(ca, options.hosts[0], sans, days)
  await mkdir(outDir, { recursive: true })
  await writeNew(files.caKey, ca.keyPem, 0o600)
  await writeNew(files.caCert, ca.certPem, 0o644)
  await writeNew(files.key, server.keyPem, 0o600)
  await writeNew(files.cert, server.certPem, 0o644)
  return files
}

/**
 * For each configured cert/key pair where BOTH files are missing, makes a self-signed pair
 * there, signed by `ca.crt`/`ca.key` in the same folder (reused if both exist, made if
 * neither does). Returns the paths it created. A pair with only one file present is an
 * operator's half-installed certificate: throws naming the missing file, overwrites nothing.
 */
export async function ensureCertificates(
  tlsConfigs: readonly { readonly cert: string; readonly key: string }[], hosts: readonly string[],
): Promise<string[]> {
  const created: string[] = []
  const seen = new Set<string>()
  const sans = subjectAltNames(hosts)
  for (const tls of tlsConfigs) {
    const cert = resolve(tls.cert)
    const key = resolve(tls.key)
    if (seen.has(`${cert}\n${key}`)) continue
    seen.add(`${cert}\n${key}`)
    const [hasCert, hasKey] = [await exists(cert), await exists(key)]
    if (hasCert && hasKey) continue
    if (hasCert) throw new Error(`TLS key file ${key} is missing but its certificate ${cert} exists; restore the key, or remove the certificate to have a self-signed pair made`)
    if (hasKey) throw new Error(`TLS certificate file ${cert} is missing but its key ${key} exists; restore the certificate, or remove the key to have a self-signed pair made`)

    const dir = dirname(cert)
    await mkdir(dir, { recursive: true })
    await mkdir(dirname(key), { recursive: true })
    const { authority, files } = await authorityIn(dir)
    created.push(...files)
    const server = issueServerCertificate(authority, hosts[0], sans, DEFAULT_DAYS)
    await writeNew(key, server.keyPem, 0o600)
    await writeNew(cert, server.certPem, 0o644)
    created.push(cert, key)
  }
  return created
}

/** Names a self-signed certificate should carry: loopback, this machine, the workspace suffix. */
export function defaultCertificateHosts(hostSuffix: string | null): string[] {
  const hosts = ['localhost', '127.0.0.1', '::1']
  const self = hostname()
  if (/^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*$/.test(self) && self !== 'localhost') hosts.push(self)
  if (hostSuffix) hosts.push(hostSuffix.slice(1), `*${hostSuffix}`)
  return hosts
}

// ---------------------------------------------------------------------------------------------

interface Authority {
  readonly cert: forge.pki.Certificate
  readonly key: forge.pki.rsa.PrivateKey
  readonly certPem: string
  readonly keyPem: string
}

async function authorityIn(dir: string): Promise<{ authority: Authority; files: string[] }> {
  const caCert = join(dir, 'ca.crt')
  const caKey = join(dir, 'ca.key')
  const [hasCert, hasKey] = [await exists(caCert), await exists(caKey)]
  if (hasCert && hasKey) {
    const [certPem, keyPem] = await Promise.all([readFile(caCert, 'utf8'), readFile(caKey, 'utf8')])
    try {
      const cert = pki.certificateFromPem(certPem)
      const key = pki.privateKeyFromPem(keyPem)
      return { authority: { cert, key, certPem, keyPem }, files: [] }
    } catch (err) {
      throw new Error(`cannot use the CA in ${caCert} and ${caKey} (an unencrypted RSA key is needed): ${(err as Error).message}`)
    }
  }
  if (hasCert || hasKey) {
    throw new Error(`${hasCert ? caKey : caCert} is missing but ${hasCert ? caCert : caKey} exists; restore it, or remove both to have a new CA made`)
  }
  const authority = createAuthority()
  await writeNew(caKey, authority.keyPem, 0o600)
  await writeNew(caCert, authority.certPem, 0o644)
  return { authority, files: [caCert, caKey] }
}

function createAuthority(): Authority {
  const { key, keyPem, publicKey } = rsaKeyPair()
  const cert = pki.createCertificate()
  cert.publicKey = publicKey
  cert.serialNumber = serialNumber()
  setValidity(cert, CA_DAYS)
  // A unique name per CA: two gateways' CAs in one trust store must not shadow each other.
  const subject = [
    { name: 'commonName', value: `workspace-gateway local CA ${randomBytes(4).toString('hex')}` },
    { name: 'organizationName', value: 'workspace-gateway' },
  ]
  cert.setSubject(subject)
  cert.setIssuer(subject)
  cert.setExtensions([
    // RFC 5280 4.2.1.9: a CA that signs only end-entity certificates.
    { name: 'basicConstraints', critical: true, cA: true, pathLenConstraint: 0 },
    { name: 'keyUsage', critical: true, keyCertSign: true, cRLSign: true },
    { name: 'subjectKeyIdentifier' },
  ])
  cert.sign(key, forge.md.sha256.create())
  return { cert, key, certPem: pki.certificateToPem(cert), keyPem }
}

function issueServerCertificate(
  ca: Authority, firstHost: string | undefined, altNames: AltName[], days: number,
): { certPem: string; keyPem: string } {
  const { keyPem, publicKey } = rsaKeyPair()
  const cert = pki.createCertificate()
  cert.publicKey = publicKey
  cert.serialNumber = serialNumber()
  setValidity(cert, days)
  // Clients match names against the SAN only (RFC 6125 6.4.4); the CN is for people.
  cert.setSubject([
    { name: 'commonName', value: (firstHost ?? 'workspace-gateway').slice(0, 64) },
    { name: 'organizationName', value: 'workspace-gateway' },
  ])
  cert.setIssuer(ca.cert.subject.attributes)
  cert.setExtensions([
    { name: 'basicConstraints', critical: true, cA: false },
    { name: 'keyUsage', critical: true, digitalSignature: true, keyEncipherment: true },
    { name: 'extKeyUsage', serverAuth: true },
    { name: 'subjectAltName', altNames },
    { name: 'subjectKeyIdentifier' },
    { name: 'authorityKeyIdentifier', keyIdentifier: ca.cert.generateSubjectKeyIdentifier().getBytes() },
  ])
  cert.sign(ca.key, forge.md.sha256.create())
  return { certPem: pki.certificateToPem(cert), keyPem }
}

function rsaKeyPair(): { key: forge.pki.rsa.PrivateKey; keyPem: string; publicKey: forge.pki.rsa.PublicKey } {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', {
    modulusLength: 2048,
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
    publicKeyEncoding: { type: 'spki', format: 'pem' },
  })
  return {
    key: pki.privateKeyFromPem(privateKey) as forge.pki.rsa.PrivateKey,
    keyPem: privateKey,
    publicKey: pki.publicKeyFromPem(publicKey) as forge.pki.rsa.PublicKey,
  }
}

type AltName = { type: 2; value: string } | { type: 7; value: string }

/** SAN entries: dNSName (type 2) for names and wildcards, iPAddress (type 7) for addresses. */
function subjectAltNames(hosts: readonly string[]): AltName[] {
  if (hosts.length === 0) throw new Error('at least one host name or IP address is needed for the certificate')
  return hosts.map((host) => {
    const bare = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host
    if (isIP(bare)) return { type: 7, value: ipBytes(bare) }
    const name = host.startsWith('*.') ? host.slice(2) : host
    const valid = name.length <= 253 &&
      name.split('.').every((label) => /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/.test(label))
    if (!valid) throw new Error(`"${host}" is not a host name, "*.suffix" wildcard or IP address`)
    return { type: 2, value: host.toLowerCase() }
  })
}

/**
 * An address as the binary string forge puts in an iPAddress SAN (4 or 16 bytes). Computed
 * here because forge's own IPv6 parser misreads some compressed forms.
 */
function ipBytes(ip: string): string {
  if (isIPv4(ip)) return String.fromCharCode(...ip.split('.').map(Number))
  const zone = ip.indexOf('%')
  if (zone !== -1) ip = ip.slice(0, zone)
  const words = (part: string): number[] => part === '' ? [] : part.split(':').flatMap((group) => {
    if (!group.includes('.')) return [parseInt(group, 16)]
    const [a, b, c, d] = group.split('.').map(Number)
    return [(a << 8) | b, (c << 8) | d]
  })
  const gap = ip.indexOf('::')
  const all = gap === -1
    ? words(ip)
    : (() => {
        const head = words(ip.slice(0, gap))
        const tail = words(ip.slice(gap + 2))
        return [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail]
      })()
  return all.map((w) => String.fromCharCode(w >> 8, w & 0xff)).join('')
}

function serialNumber(): string {
  // RFC 5280 4.1.2.2: positive, at most 20 octets; random so that reissues never collide.
  const bytes = randomBytes(16)
  bytes[0] = (bytes[0] & 0x7f) | 0x40
  return bytes.toString('hex')
}

/** The lifetime counts from the backdated start: Apple's 825-day limit is notAfter - notBefore. */
function setValidity(cert: forge.pki.Certificate, days: number): void {
  const notBefore = Date.now() - BACKDATE_MS
  cert.validity.notBefore = new Date(notBefore)
  cert.validity.notAfter = new Date(notBefore + days * 24 * 60 * 60 * 1000)
}

function lifetime(days: number | undefined): number {
  if (days === undefined) return DEFAULT_DAYS
  if (!Number.isInteger(days) || days < 1 || days > 36500) throw new Error(`days must be an integer from 1 to 36500, got ${days}`)
  return days
}

async function exists(file: string): Promise<boolean> {
  try {
    await access(file)
    return true
  } catch {
    return false
  }
}

/** Written whole or not at all: a temp file beside the target (mode set at creation), renamed. */
async function writeNew(file: string, content: string, mode: number): Promise<void> {
  const temp = join(dirname(file), `.${basename(file, extname(file))}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`)
  try {
    await writeFile(temp, content, { mode, flag: 'wx' })
    await rename(temp, file)
  } catch (err) {
    await unlink(temp).catch(() => {})
    throw err
  }
}
