// Reads HTTP/1.1 responses out of the raw bytes a client received, keeping header case and the
// exact body bytes, so tests can assert framing byte for byte.

export interface RawResponse {
  readonly status: number
  readonly statusLine: string
  /** Field lines as received: names keep their case. */
  readonly headers: [string, string][]
  /** The head as received, without the final CRLFCRLF. */
  readonly head: string
  /** Body bytes as framed on the wire (chunk framing included for chunked bodies). */
  readonly rawBody: string
  /** The decoded body (chunk framing removed). */
  readonly body: string
  /** The framing said where the body ends and all of it arrived. */
  readonly complete: boolean
  get(name: string): string | undefined
  all(name: string): string[]
}

/**
 * Every response in `raw`, 1xx interim ones included, in order. `bodyless(i)` tells whether
 * the i-th final response answers a HEAD (no body whatever its headers say).
 */
export function parseResponses(raw: string, bodyless: (finalIndex: number) => boolean = () => false): RawResponse[] {
  const out: RawResponse[] = []
  let pos = 0
  let finals = 0
  while (pos < raw.length) {
    const end = raw.indexOf('\r\n\r\n', pos)
    if (end === -1) break
    const head = raw.slice(pos, end)
    const lines = head.split('\r\n')
    const statusLine = lines[0]
    const status = Number(statusLine.split(' ')[1])
    const headers: [string, string][] = lines.slice(1).map((l) => {
      const c = l.indexOf(':')
      return [l.slice(0, c), l.slice(c + 1).trim()]
    })
    const get = (name: string): string | undefined => headers.find(([n]) => n.toLowerCase() === name.toLowerCase())?.[1]
    const all = (name: string): string[] => headers.filter(([n]) => n.toLowerCase() === name.toLowerCase()).map(([, v]) => v)
    pos = end + 4
    let rawBody = ''
    let body = ''
    let complete = true
    if (status >= 100 && status < 200) {
      // interim: no body
    } else {
      const noBody = bodyless(finals) || status === 204 || status === 304
      finals++
      const te = get('transfer-encoding')
      const cl = get('content-length')
      if (noBody) {
        // nothing
      } else if (te !== undefined && te.toLowerCase().includes('chunked')) {
        const r = decodeChunked(raw, pos)
        rawBody = raw.slice(pos, r.end)
        body = r.body
        complete = r.complete
        pos = r.end
      } else if (cl !== undefined) {
        const n = Number(cl)
        rawBody = raw.slice(pos, pos + n)
        body = rawBody
        complete = rawBody.length === n
        pos += rawBody.length
      } else {
        rawBody = raw.slice(pos)
        body = rawBody
        pos = raw.length
      }
    }
    out.push({ status, statusLine, headers, head, rawBody, body, complete, get, all })
  }
  return out
}

/** The first final (non-1xx) response in `raw`; throws when there is none. */
export function finalResponse(raw: string, bodyless = false): RawResponse {
  const r = parseResponses(raw, () => bodyless).find((x) => x.status >= 200)
  if (r === undefined) throw new Error(`no final response in ${JSON.stringify(raw.slice(0, 300))}`)
  return r
}

function decodeChunked(raw: string, start: number): { body: string; end: number; complete: boolean } {
  let pos = start
  let body = ''
  for (;;) {
    const eol = raw.indexOf('\r\n', pos)
    if (eol === -1) return { body, end: raw.length, complete: false }
    const size = parseInt(raw.slice(pos, eol).split(';')[0], 16)
    pos = eol + 2
    if (size === 0) {
      for (;;) {
        const e = raw.indexOf('\r\n', pos)
        if (e === -1) return { body, end: raw.length, complete: false }
        if (e === pos) return { body, end: pos + 2, complete: true }
        pos = e + 2
      }
    }
    if (raw.length < pos + size + 2) return { body: body + raw.slice(pos), end: raw.length, complete: false }
    body += raw.slice(pos, pos + size)
    pos += size + 2
  }
}
