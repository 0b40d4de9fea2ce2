// The per-request functions of the forwarding path: head parsing on both sides and the two
// head rewrites, on the request and response shapes the IDE sends most.

import { parseRequestHead } from '../../src/http1/request-head.js'
import { parseResponseHead } from '../../src/http1/response-head.js'
import { serializeRequestHead, serializeResponseHead } from '../../src/upstream/forwarded-headers.js'
import { nsPerOp, row } from '../micro-timing.js'

const request = [
  'GET /32770_node1.example.com/api/project/console-java-simple?token=eyJhbGciOi HTTP/1.1',
  'Host: ide.example.com',
  'User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36',
  'Accept: application/json, text/plain, */*',
  'Accept-Language: en-US,en;q=0.9',
  'Accept-Encoding: gzip, deflate, br',
  'Referer: https://ide.example.com/dashboard/',
  'X-CSRF-Token: 1f0e3dad99908345f7439f8ffabdffc4',
  'Cookie: session-access-key=abc; theme=dark; IDESESSIONID=xyz',
  'Connection: keep-alive',
].join('\r\n')
const response = [
  'HTTP/1.1 200 OK',
  'Content-Type: application/json',
  'Content-Length: 1532',
  'Cache-Control: no-cache',
  'Date: Sun, 29 Nov 2026 02:00:00 GMT',
  'Connection: keep-alive',
  'Keep-Alive: timeout=20',
].join('\r\n')

// The gateway hands the parsers the bytes it read along with their latin1 string.
const requestBytes = Buffer.from(request, 'latin1')
const responseBytes = Buffer.from(response, 'latin1')
const req = parseRequestHead(request, 100)
const res = parseResponseHead(response, 100)
const ctx = { clientAddress: '203.0.113.7', proto: 'https', port: 443, requestId: 'abc-1', stripCookies: new Set(['session-access-key', 'IDESESSIONID']) }

process.stdout.write('hot path functions\n')
process.stdout.write(`${row('parseRequestHead (10 fields, from the bytes read)', nsPerOp(() => parseRequestHead(requestBytes.toString('latin1'), 100, requestBytes)))}\n`)
process.stdout.write(`${row('parseResponseHead (6 fields, from the bytes read)', nsPerOp(() => parseResponseHead(responseBytes.toString('latin1'), 100, responseBytes)))}\n`)
process.stdout.write(`${row('serializeRequestHead (with cookie strip)', nsPerOp(() => serializeRequestHead(req, ctx)))}\n`)
process.stdout.write(`${row('serializeRequestHead (no cookie strip)', nsPerOp(() => serializeRequestHead(req, { ...ctx, stripCookies: null })))}\n`)
process.stdout.write(`${row('serializeResponseHead', nsPerOp(() => serializeResponseHead(res, false)))}\n`)
