// The admin API's answers and request bodies. Every error answer has one shape,
// `{"errors":[{"path","message"}]}` (the same as `gateway check` and the registry protocol),
// so the CLI and scripts print them the same way whatever went wrong.

import type { IncomingMessage, ServerResponse } from 'node:http'
import { parseJsonBytes } from '../config/parse-json.js'
import type { ConfigIssue } from '../config/types.js'
import { readBody as readAnyBody, sendErrors, sendJson, sendText } from '../control-http.js'

export type AdminIssue = ConfigIssue

export { sendErrors, sendJson, sendText }

/** A request body that could not be used; `status` is 400 or 413. */
export class BodyError extends Error {
  constructor(readonly status: number, readonly issue: AdminIssue) {
    super(issue.message)
    this.name = 'BodyError'
  }
}

/** A whole request body of at most `limit` bytes; rejects with a 413 BodyError over it. */
export async function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const body = await readAnyBody(req, limit)
  if (body === null) throw new BodyError(413, { path: '', message: `the request body is larger than ${limit} bytes` })
  return body
}

/**
 * The body parsed as JSON; `undefined` for an empty body when `optional`. Rejects with a
 * BodyError (400 for bad JSON, 413 for size).
 */
export async function readJson(req: IncomingMessage, limit: number, options: { optional?: boolean } = {}): Promise<unknown> {
  // Any content type is read as JSON: `curl -d` sends form-urlencoded, and the bearer token,
  // not the content type, is what keeps cross-origin browser requests out.
  const body = await readBody(req, limit)
  if (body.every(isJsonSpace)) {
    if (options.optional) return undefined
    throw new BodyError(400, { path: '', message: 'the request body is empty; a JSON document is required' })
  }
  // The config file's parser: UTF-8 only, duplicate keys refused (JSON.parse keeps the last one
  // silently), and line and column in every syntax error.
  const parsed = parseJsonBytes(body)
  if (!parsed.ok) throw new BodyError(400, { path: parsed.issue.path, message: parsed.issue.message.replace(/^invalid JSON/, 'the request body is not valid JSON') })
  return parsed.value
}

/** RFC 8259 section 2 whitespace. */
function isJsonSpace(byte: number): boolean {
  return byte === 0x20 || byte === 0x0a || byte === 0x0d || byte === 0x09
}

/**
 * Reads a body the call ignores, whole, before the call changes anything: a request cut short
 * (or over `limit`) is answered here and gets false, so no change is made for a request its
 * client is told failed.
 */
export async function readIgnoredBody(req: IncomingMessage, res: ServerResponse, limit: number): Promise<boolean> {
  try {
    await readBody(req, limit)
    return true
  } catch (err) {
    sendBodyError(res, err)
    return false
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
