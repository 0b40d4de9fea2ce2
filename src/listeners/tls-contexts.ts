// Certificates for the HTTPS listeners: loaded and checked completely (parse, key match,
// validity dates) before anything is swapped, so a half-written file during a renewal is a
// refused reload, never an HTTPS outage. SNI picks a per-host certificate by exact name, then
// by wildcard; anything else gets the listener's default certificate.

import { X509Certificate, createPrivateKey } from 'node:crypto'
import tls from 'node:tls'
import { readFromDisk, type FileReader } from '../config/file-snapshot.js'
import type { TlsConfig } from '../config/types.js'

/**
 * What every HTTPS listener and SNI certificate offers: TLS 1.2 and 1.3 only, and with TLS 1.2
 * only forward-secret AEAD suites (Mozilla's "intermediate" list, which Debian's HAProxy
 * ships as its default; its DHE suites are left out, there are no DH parameters). Node's own
 * default adds static-RSA and CBC suites (testssl.sh: "obsolete CBC ciphers", LUCKY13).
 */
export const TLS_POLICY = {
  minVersion: 'TLSv1.2',
  ciphers: [
    'TLS_AES_256_GCM_SHA384', 'TLS_CHACHA20_POLY1305_SHA256', 'TLS_AES_128_GCM_SHA256',
    'ECDHE-ECDSA-AES128-GCM-SHA256', 'ECDHE-RSA-AES128-GCM-SHA256',
    'ECDHE-ECDSA-AES256-GCM-SHA384', 'ECDHE-RSA-AES256-GCM-SHA384',
    'ECDHE-ECDSA-CHACHA20-POLY1305', 'ECDHE-RSA-CHACHA20-POLY1305',
  ].join(':'),
  honorCipherOrder: true,
} as const satisfies tls.SecureContextOptions

export interface CertificateIssue {
  path: string
  message: string
}

export class TlsContexts {
  constructor(
    readonly defaultContext: tls.SecureContext,
    /** The default pair as PEM, for `server.setSecureContext` (clients without SNI). */
    readonly defaultPem: { cert: Buffer; key: Buffer },
    private readonly exact: ReadonlyMap<string, tls.SecureContext>,
    private readonly wildcard: ReadonlyMap<string, tls.SecureContext>,
    /** Summary of what is served, for /stats and logs. */
    readonly certificates: readonly { file: string; subject: string; validTo: string; san: string }[],
  ) {}

  /** The context for an SNI server name, or undefined for the default. */
  forServerName(name: string): tls.SecureContext | undefined {
    const lower = name.toLowerCase()
    const hit = this.exact.get(lower)
    if (hit !== undefined) return hit
    const dot = lower.indexOf('.')
    return dot === -1 ? undefined : this.wildcard.get(lower.slice(dot))
  }
}

interface LoadedPair {
  context: tls.SecureContext
  pem: { cert: Buffer; key: Buffer }
  summary: { file: string; subject: string; validTo: string; san: string }
}

/** Reads and checks one cert/key pair; returns the problems instead of throwing. */
async function loadPair(certFile: string, keyFile: string, path: string, now: number, read: FileReader): Promise<LoadedPair | CertificateIssue[]> {
  let certPem: Buffer
  let keyPem: Buffer
  try {
    ;[certPem, keyPem] = await Promise.all([read(certFile), read(keyFile)])
  } catch (err) {
    return [{ path, message: `cannot read ${(err as NodeJS.ErrnoException).path ?? certFile}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}` }]
  }
  let x509: X509Certificate
  try {
    x509 = new X509Certificate(certPem)
  } catch (err) {
    return [{ path: `${path}.cert`, message: `${certFile} is not a valid PEM certificate (${(err as Error).message})` }]
  }
  let key
  try {
    key = createPrivateKey(keyPem)
  } catch (err) {
    return [{ path: `${path}.key`, message: `${keyFile} is not a valid PEM private key (${(err as Error).message})` }]
  }
  if (!x509.checkPrivateKey(key)) return [{ path: `${path}.key`, message: `${keyFile} does not match the certificate ${certFile}` }]
  if (Date.parse(x509.validTo) <= now) return [{ path: `${path}.cert`, message: `${certFile} expired on ${x509.validTo}` }]
  if (Date.parse(x509.validFrom) > now) return [{ path: `${path}.cert`, message: `${certFile} is not valid before ${x509.validFrom}` }]
  let context: tls.SecureContext
  try {
    context = tls.createSecureContext({ ...TLS_POLICY, cert: certPem, key: keyPem })
  } catch (err) {
    return [{ path, message: `cannot use ${certFile}: ${(err as Error).message}` }]
  }
  return { context, pem: { cert: certPem, key: keyPem }, summary: { file: certFile, subject: x509.subject, validTo: x509.validTo, san: x509.subjectAltName ?? '' } }
}

/** Names a certificate covers, from its SAN (DNS and IP entries). */
function sanNames(x509San: string): string[] {
  return x509San.split(',').map((s) => s.trim()).filter((s) => s.startsWith('DNS:') || s.startsWith('IP Address:'))
    .map((s) => s.slice(s.indexOf(':') + 1).toLowerCase())
}

/**
 * Loads the default pair and every SNI pair of a listener, read through `read` (a reload's
 * snapshot, else the disk). `path` is the JSON path of the tls object (e.g. "listeners[2].tls").
 * Each SNI host must be covered by its certificate's SAN.
 */
export async function loadTlsContexts(config: TlsConfig, path: string, read: FileReader = readFromDisk): Promise<TlsContexts | CertificateIssue[]> {
  const now = Date.now()
  const issues: CertificateIssue[] = []
  const main = await loadPair(config.cert, config.key, path, now, read)
  if (Array.isArray(main)) issues.push(...main)
  const exact = new Map<string, tls.SecureContext>()
  const wildcard = new Map<string, tls.SecureContext>()
  const summaries = Array.isArray(main) ? [] : [main.summary]
  const sni = config.sni ?? []
  for (let i = 0; i < sni.length; i++) {
    const entry = sni[i]
    const pair = await loadPair(entry.cert, entry.key, `${path}.sni[${i}]`, now, read)
    if (Array.isArray(pair)) {
      issues.push(...pair)
      continue
    }
    const names = sanNames(pair.summary.san)
    for (const host of entry.hosts) {
      const h = host.toLowerCase()
      const covered = names.includes(h) || (!h.startsWith('*.') && names.includes(`*${h.slice(h.indexOf('.'))}`))
      if (!covered) issues.push({ path: `${path}.sni[${i}].hosts`, message: `${entry.cert} does not cover ${host} (SAN: ${pair.summary.san || 'none'})` })
      if (h.startsWith('*.')) wildcard.set(h.slice(1), pair.context)
      else exact.set(h, pair.context)
    }
    summaries.push(pair.summary)
  }
  if (issues.length > 0 || Array.isArray(main)) return issues
  return new TlsContexts(main.context, main.pem, exact, wildcard, summaries)
}
