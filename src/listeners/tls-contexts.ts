// Certificates for the HTTPS listeners: loaded and checked completely (parse, key match,
// validity dates) before anything is swapped, so a half-written file during a renewal is a
// refused reload, never an HTTPS outage. SNI picks a per-host certificate by exact name, then
// by wildcard; anything else gets the listener's default certificate.

import { X509Certificate, createPrivateKey, randomBytes } from 'node:crypto'
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

/** Node's `ticketKeys`: a 16-byte key name, a 16-byte HMAC key and a 16-byte AES key. */
export const TICKET_KEYS_BYTES = 48

/**
 * The session ticket keys (RFC 5077; RFC 8446 4.6.1 in TLS 1.3) of one gateway run. Node gives
 * every SecureContext random keys of its own, so a ticket issued before a reload could not be
 * opened after it and the client paid a full handshake. (node:cluster hands the first worker's
 * keys to the others when they listen on a shared socket, but a reload gave each worker keys
 * of its own again, and a restarted worker the first one's old keys.) One set is made when the
 * gateway starts (by the primary, with workers, which hands it to every worker over IPC) and
 * given to every context; it lives in memory only and a restart makes a new one, as HAProxy
 * does without `tls-ticket-keys`. No rotation: a run's keys live as long as it does.
 */
export function newTicketKeys(): Buffer {
  return randomBytes(TICKET_KEYS_BYTES)
}

/**
 * What every TLS context the gateway makes is built from: the policy, the run's ticket keys
 * and a pair. (Node 20 seals and opens tickets with the tls.Server's keys even when SNI picked
 * another context; the SNI contexts get the same keys so that never depends on it.)
 */
function contextOptions(ticketKeys: Buffer, pem: { cert: Buffer; key: Buffer }): tls.SecureContextOptions {
  return { ...TLS_POLICY, ticketKeys, ...pem }
}

export interface CertificateIssue {
  path: string
  message: string
}

export class TlsContexts {
  constructor(
    readonly defaultContext: tls.SecureContext,
    /**
     * The default pair with the policy and the ticket keys, for `tls.createServer` and
     * `server.setSecureContext` (clients without SNI).
     */
    readonly serverOptions: tls.SecureContextOptions,
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
  options: tls.SecureContextOptions
  summary: { file: string; subject: string; validTo: string; san: string }
}

/** Reads and checks one cert/key pair; returns the problems instead of throwing. */
async function loadPair(certFile: string, keyFile: string, path: string, now: number, ticketKeys: Buffer, read: FileReader): Promise<LoadedPair | CertificateIssue[]> {
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
  const options = contextOptions(ticketKeys, { cert: certPem, key: keyPem })
  let context: tls.SecureContext
  try {
    context = tls.createSecureContext(options)
  } catch (err) {
    return [{ path, message: `cannot use ${certFile}: ${(err as Error).message}` }]
  }
  return { context, options, summary: { file: certFile, subject: x509.subject, validTo: x509.validTo, san: x509.subjectAltName ?? '' } }
}

/** Names a certificate covers, from its SAN (DNS and IP entries). */
function sanNames(x509San: string): string[] {
  return x509San.split(',').map((s) => s.trim()).filter((s) => s.startsWith('DNS:') || s.startsWith('IP Address:'))
    .map((s) => s.slice(s.indexOf(':') + 1).toLowerCase())
}

/**
 * Loads the default pair and every SNI pair of a listener, read through `read` (a reload's
 * snapshot, else the disk), each context with the run's `ticketKeys` (see newTicketKeys).
 * `path` is the JSON path of the tls object (e.g. "listeners[2].tls"). Each SNI host must be
 * covered by its certificate's SAN.
 */
export async function loadTlsContexts(config: TlsConfig, path: string, ticketKeys: Buffer, read: FileReader = readFromDisk): Promise<TlsContexts | CertificateIssue[]> {
  const now = Date.now()
  const issues: CertificateIssue[] = []
  const main = await loadPair(config.cert, config.key, path, now, ticketKeys, read)
  if (Array.isArray(main)) issues.push(...main)
  const exact = new Map<string, tls.SecureContext>()
  const wildcard = new Map<string, tls.SecureContext>()
  const summaries = Array.isArray(main) ? [] : [main.summary]
  const sni = config.sni ?? []
  for (let i = 0; i < sni.length; i++) {
    const entry = sni[i]
    const pair = await loadPair(entry.cert, entry.key, `${path}.sni[${i}]`, now, ticketKeys, read)
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
  return new TlsContexts(main.context, main.options, exact, wildcard, summaries)
}
