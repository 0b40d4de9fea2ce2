import { describe, expect, it } from 'vitest'
import { parseJson } from '../../src/config/parse-json.js'

describe('parseJson', () => {
  it('parses what JSON.parse parses', () => {
    const text = '\ufeff{"a": [1, -2.5e3, true, false, null, "x\\n\\u00e9\\ud83d\\ude00"], "b": {}, "c": []}'
    expect(parseJson(text)).toEqual({ ok: true, value: JSON.parse(text.slice(1)) })
  })

  it.each([
    ['{"a":}', 'line 1, column 6'],
    ['{"a":1,}', 'line 1, column 8'],
    ['{\n"a": 1\n"b": 2}', 'line 3, column 1'],
    ['', 'line 1, column 1'],
    ['[1, 2', 'line 1, column 6'],
    ['{"a": tru}', 'line 1, column 7'],
    ['{"a": 01}', 'line 1, column 8'],
    ['{"a": "x\ny"}', 'line 1, column 9'],
    ['{} {}', 'line 1, column 4'],
    ["{'a': 1}", 'line 1, column 2'],
  ])('locates the error in %j', (text, where) => {
    const result = parseJson(text)
    expect(result.ok).toBe(false)
    if (!result.ok) expect(result.issue).toEqual({ path: '', message: expect.stringContaining(where) })
  })

  it('rejects a duplicate key at its JSON path', () => {
    expect(parseJson('{"listeners": [{"port": 1, "port": 2}]}')).toEqual({
      ok: false, issue: { path: 'listeners[0].port', message: expect.stringContaining('duplicate key "port"') },
    })
  })

  it('keeps "__proto__" as an own key', () => {
    const result = parseJson('{"__proto__": {"polluted": true}}')
    expect(result.ok && Object.hasOwn(result.value as object, '__proto__')).toBe(true)
    expect(({} as Record<string, unknown>).polluted).toBeUndefined()
  })
})
