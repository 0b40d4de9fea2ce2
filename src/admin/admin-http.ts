// The admin API's answers and request bodies. Every error answer has one shape,
// `{"errors":[{"path","message"}]}` (the same as `gateway check` and the registry protocol),
// so the CLI and scripts print them the same way whatever went wrong.

import type { IncomingMessage, ServerResponse } from 'node:http'
import type { ConfigIssue } from '../config/types.js'

export type AdminIssue = ConfigIssue

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (res.headersSent || res.destroyed) return
  const text = `${JSON.stringify(body)}\n`
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': String(Buffer.byteLength(text)),
    'cache-control': 'no-store',
    ...headers,
  })
  res.end(res.req.method === 'HEAD' ? undefined : text)
}

export function sendErrors(res: ServerResponse, status: number, errors: readonly AdminIssue[], headers: Record<string, string> = {}): void {
  sendJson(res, status, { errors }, headers)
}

export function sendText(res: ServerResponse, status: number, text: string, contentType: string): void {
  if (res.headersSent || res.destroyed) return
  res.writeHead(status, {
    'content-type': contentType,
    'content-length': String(Buffer.byteLength(text)),
    'cache-control': 'no-store',
  })
  res.end(res.req.method === 'HEAD' ? undefined : text)
}

/** A request body that could not be used; `status` is 400 or 413. */
export class BodyError extends Error {
  constructor(readonly status: number, readonly issue: AdminIssue) {
    super(issue.message)
    this.name = 'BodyError'
  }
}

/**
 * Reads a whole request body of at most `limit` bytes. An announced or actual size over the
 * limit rejects with 413 at once (the rest is not read: the connection is closed after the
 * answer, see `sendBodyError`).
 */
export function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const tooLarge = (): BodyError => new BodyError(413, { path: '', message: `the request body is larger than ${limit} bytes` })
    const announced = Number(req.headers['content-length'])
    if (announced > limit) {
      reject(tooLarge())
      return
    }
    const chunks: Buffer[] = []
    let size = 0
    const cleanup = (): void => {
      req.off('data', onData)
      req.off('end', onEnd)
      req.off('error', onError)
      req.off('aborted', onAborted)
    }
    const onData = (chunk: Buffer): void => {
      size += chunk.length
      if (size > limit) {
        cleanup()
        req.pause()
        reject(tooLarge())
        return
      }
      chunks.push(chunk)
    }
    const onEnd = (): void => {
      cleanup()
      resolve(Buffer.concat(chunks, size))
    }
    const onError = (err: Error): void => {
      cleanup()
      reject(err)
    }
    const onAborted = (): void => onError(new Error('the client went away'))
    req.on('data', onData)
    req.on('end', onEnd)
    req.on('error', onError)
    req.on('aborted', onAborted)
  })
}

/**
 * The body parsed as JSON; `undefined` for an empty body when `optional`. Rejects with a
 * BodyError (400 for bad JSON, 413 for size).
 */
export async function readJson(req: IncomingMessage, limit: number, options: { optional?: boolean } = {}): Promise<unknown> {
  // Any content type is read as JSON: `curl -d` sends form-urlencoded, and the bearer token,
  // not the content type, is what keeps cross-origin browser requests out.
  const body = await readBody(req, limit)
  const text = body.toString('utf8').trim()
  if (text === '') {
    if (options.optional) return undefined
    throw new BodyError(400, { path: '', message: 'the request body is empty; a JSON document is required' })
  }
  try {
    return JSON.parse(text) as unknown
  } catch (err) {
    throw new BodyError(400, { path: '', message: `the request body is not valid JSON: ${(err as Error).message}` })
  }
}

/** Answers a failed body read; a 413 closes the connection (the unread rest would be taken for the next request). */
export function sendBodyError(res: ServerResponse, err: unknown): void {
  if (err instanceof BodyError) {
    sendErrors(res, err.status, [err.issue], err.status === 413 ? { connection: 'close' } : {})
    return
  }
  sendErrors(res, 400, [{ path: '', message: `cannot read the request body: ${(err as Error).message}` }], { connection: 'close' })
}
