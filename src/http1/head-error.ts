// Why a head failed to parse. The parsers stay independent of what the gateway answers: the
// front (listeners) maps these to 400/431, the upstream side to 502.

export type HeadErrorKind = 'malformed' | 'too_large'

export class HeadError extends Error {
  constructor(readonly kind: HeadErrorKind, message: string) {
    super(message)
    this.name = 'HeadError'
  }
}
