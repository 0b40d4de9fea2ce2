// Calls to a test gateway's admin listener, with node:http so tests control every header
// (Host included).

import http from 'node:http'
import type { TestGateway } from '../helpers/gateway.js'

export const TOKEN = 'test-admin-token'

export interface Reply {
  status: number
  headers: http.IncomingHttpHeaders
  text: string
  json: any
}

export interface CallOptions {
  body?: unknown
  /** Raw body text (sent as is). */
  raw?: string
  /** null: no Authorization header. */
  token?: string | null
  headers?: Record<string, string>
}

export function adminPort(gw: TestGateway): number {
  return gw.gw.addresses().admin.port
}

export function admin(gw: TestGateway | number, method: string, path: string, options: CallOptions = {}): Promise<Reply> {
  const port = typeof gw === 'number' ? gw : adminPort(gw)
  const token = options.token === undefined ? TOKEN : options.token
  const body = options.raw ?? (options.body === undefined ? undefined : JSON.stringify(options.body))
  const headers: Record<string, string> = { ...options.headers }
  if (token !== null) headers.authorization = `Bearer ${token}`
  if (body !== undefined) {
    headers['content-type'] ??= 'application/json'
    headers['content-length'] = String(Buffer.byteLength(body))
  }
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path, headers, agent: false }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8')
        let json: unknown = null
        try {
          json = JSON.parse(text)
        } catch {
          // not JSON
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json })
      })
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end(body)
  })
}
