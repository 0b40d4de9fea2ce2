// Full TLS handshakes per second with an ECDSA P-256 and an RSA 2048 certificate. Each
// target is restarted with the other certificate between the two halves.
import type { CertKind } from '../certs.js'
import { runHandshakes } from '../loaders/tls-handshakes.js'
import { DEFAULT_SPEC, TARGET_NAMES } from '../targets/target.js'
import { measureTargets } from './measure-targets.js'
import type { ResultRow, Scenario, ScenarioContext, ScenarioOutput } from './scenario.js'

const CERTS: readonly CertKind[] = ['ecdsa', 'rsa']

export const tlsHandshakes: Scenario = {
  name: 'tls-handshakes',
  title: 'new TLS handshakes per second, no session resumption (ECDSA P-256, RSA 2048)',
  async run(ctx: ScenarioContext): Promise<ScenarioOutput> {
    const concurrency = Math.min(ctx.options.connections, 32)
    const rows: ResultRow[] = []
    for (const cert of CERTS) {
      rows.push(...await measureTargets(ctx, TARGET_NAMES, { ...DEFAULT_SPEC, cert, usesTls: true }, cert, (target, seconds) => {
        const url = new URL(target.httpsUrl)
        return runHandshakes({ host: url.hostname, port: Number(url.port), concurrency, seconds })
      }))
    }
    return {
      rows,
      notes: [
        `loader: node tls.connect loops, ${concurrency} concurrent, TLS 1.3 default groups; the client verifies each handshake's signature too, so the loader shares the CPU cost`,
        'direct is the upstream\'s own node:https server doing the same handshakes, a peer rather than a ceiling',
      ],
      directIsCeiling: false,
    }
  },
}
