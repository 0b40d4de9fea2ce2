// Self-signed certificates for the HTTPS scenarios, made fresh per run with openssl: one
// ECDSA P-256 and one RSA 2048, for CN=localhost and IP 127.0.0.1. HAProxy wants the
// certificate and key in one PEM, so that is written too.
import { execFile } from 'node:child_process'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'

const run = promisify(execFile)

export type CertKind = 'ecdsa' | 'rsa'

export interface CertFiles {
  readonly cert: string
  readonly key: string
  /** Certificate followed by key (HAProxy's `crt`). */
  readonly combined: string
}

export type CertSet = Readonly<Record<CertKind, CertFiles>>

async function makeOne(dir: string, kind: CertKind): Promise<CertFiles> {
  const cert = join(dir, `${kind}.crt`)
  const key = join(dir, `${kind}.key`)
  const combined = join(dir, `${kind}.pem`)
  const keyArgs = kind === 'ecdsa'
    ? ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1']
    : ['-newkey', 'rsa:2048']
  await run('openssl', [
    'req', '-x509', ...keyArgs, '-nodes', '-days', '2', '-subj', '/CN=localhost',
    '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
    '-keyout', key, '-out', cert,
  ])
  await writeFile(combined, (await readFile(cert, 'utf8')) + (await readFile(key, 'utf8')), { mode: 0o600 })
  return { cert, key, combined }
}

export async function makeCertificates(dir: string): Promise<CertSet> {
  const [ecdsa, rsa] = await Promise.all([makeOne(dir, 'ecdsa'), makeOne(dir, 'rsa')])
  return { ecdsa, rsa }
}
