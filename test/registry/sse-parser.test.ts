import { describe, expect, it } from 'vitest'
import { SseParser } from '../../src/registry/sse-parser.js'
import type { SseMessage } from '../../src/registry/sse-parser.js'

function parse(chunks: string[], maxLine?: number): SseMessage[] {
  const out: SseMessage[] = []
  const parser = new SseParser((m) => out.push(m), maxLine)
  for (const chunk of chunks) parser.push(Buffer.from(chunk))
  return out
}

describe('SseParser', () => {
  it('dispatches on a blank line with id, event and multi-line data', () => {
    expect(parse(['id: 7\nevent: x\ndata: a\ndata: b\n\n'])).toEqual([{ id: '7', event: 'x', data: 'a\nb' }])
  })

  it('handles \\r\\n and \\r line ends split across chunks', () => {
    expect(parse(['id: 1\r', '\ndata: {"a":1}\r\n\r', '\n', 'data:x\r\r'])).toEqual([
      { id: '1', event: 'message', data: '{"a":1}' },
      { id: '1', event: 'message', data: 'x' },
    ])
  })

  it('splits multi-byte characters across chunks correctly', () => {
    const bytes = Buffer.from('data: é\n\n')
    const out: SseMessage[] = []
    const parser = new SseParser((m) => out.push(m))
    parser.push(bytes.subarray(0, 7))
    parser.push(bytes.subarray(7))
    expect(out).toEqual([{ id: null, event: 'message', data: 'é' }])
  })

  it('ignores comments and never dispatches a partial event', () => {
    expect(parse([': keepalive\n\n', 'id: 2\ndata: {"op":"delete"'])).toEqual([])
  })

  it('dispatches an event type without data (event: reset)', () => {
    expect(parse(['event: reset\nid: 9\n\n'])).toEqual([{ id: '9', event: 'reset', data: '' }])
  })

  it('refuses a line longer than the bound', () => {
    expect(() => parse([`data: ${'x'.repeat(100)}`], 50)).toThrow(/longer than 50/)
    expect(() => parse([`data: ${'x'.repeat(30)}`, 'x'.repeat(30)], 50)).toThrow(/longer than 50/)
  })
})
