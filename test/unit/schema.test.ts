import { describe, expect, it } from 'vitest';
import { KvfError, type ErrorCodeName } from '../../shared/errors.js';
import { s, type Schema } from '../../shared/protocol/schema.js';

/** Parse must fail with this code and a message that starts with the offending path. */
function rejects(
  schema: Schema<unknown>,
  value: unknown,
  path: string,
  code: ErrorCodeName = 'BAD_REQUEST',
): KvfError {
  let caught: unknown;
  try {
    schema.parse(value);
  } catch (err) {
    caught = err;
  }
  expect(caught, `expected ${JSON.stringify(value)} to be rejected`).toBeInstanceOf(KvfError);
  const e = caught as KvfError;
  expect(e.codeName).toBe(code);
  expect(e.message.startsWith(`${path}:`), `message "${e.message}" should start with "${path}:"`).toBe(true);
  return e;
}

describe('schema combinators', () => {
  it('string: length bounds and pattern', () => {
    const sch = s.string({ minLength: 2, maxLength: 4, pattern: /^[a-z]+$/ });
    expect(sch.parse('abc')).toBe('abc');
    rejects(sch, 'a', '<root>');
    rejects(sch, 'abcde', '<root>');
    rejects(sch, 'AB', '<root>');
    const e = rejects(sch, 7, '<root>');
    expect(e.message).toMatch(/got 7$/);
    expect(e.details).toMatchObject({ path: '<root>' });
    // the default cap keeps a multi-megabyte string out of handlers
    rejects(s.string(), 'x'.repeat(4097), '<root>');
  });

  it('int: integers within bounds only', () => {
    const sch = s.int({ min: 0, max: 10 });
    expect(sch.parse(0)).toBe(0);
    expect(sch.parse(10)).toBe(10);
    for (const bad of [-1, 11, 1.5, '3', NaN, null, 2 ** 60]) rejects(sch, bad, '<root>');
  });

  it('number: finite within bounds', () => {
    const sch = s.number({ min: 0, max: 1 });
    expect(sch.parse(0.5)).toBe(0.5);
    for (const bad of [Infinity, -0.1, 1.1, '0.5', NaN]) rejects(sch, bad, '<root>');
  });

  it('bool, literal and enum', () => {
    expect(s.bool().parse(false)).toBe(false);
    rejects(s.bool(), 'true', '<root>');
    expect(s.literal('put').parse('put')).toBe('put');
    rejects(s.literal('put'), 'get', '<root>');
    const dt = s.enum(['fp16', 'bf16'] as const);
    expect(dt.parse('bf16')).toBe('bf16');
    expect(rejects(dt, 'fp64', '<root>').message).toMatch(/one of fp16\|bf16/);
  });

  it('hex: exact length, lowercase', () => {
    const h = s.hex(4);
    expect(h.parse('deadbeef')).toBe('deadbeef');
    for (const bad of ['DEADBEEF', 'deadbee', 'deadbeef00', 'zzzzzzzz', 1]) rejects(h, bad, '<root>');
  });

  it('base64: decodes to bytes, enforces the byte cap and canonical padding', () => {
    const b = s.base64({ maxBytes: 4 });
    expect([...b.parse(Buffer.from([1, 2, 3, 4]).toString('base64'))]).toEqual([1, 2, 3, 4]);
    expect(b.parse('').byteLength).toBe(0);
    rejects(b, Buffer.from([1, 2, 3, 4, 5]).toString('base64'), '<root>'); // 5 bytes, 8 chars
    rejects(b, Buffer.alloc(6).toString('base64'), '<root>'); // 6 bytes in 8 chars: decoded size checked
    rejects(b, 'AQI', '<root>'); // unpadded
    rejects(b, 'AQ!=', '<root>');
    rejects(b, 42, '<root>');
  });

  it('u64: decimal strings up to 2^64-1 as bigint', () => {
    const u = s.u64();
    expect(u.parse('18446744073709551615')).toBe(0xffffffffffffffffn);
    expect(u.parse('0')).toBe(0n);
    for (const bad of ['18446744073709551616', '-1', '1e3', 12, '', '0x10']) rejects(u, bad, '<root>');
  });

  it('array: items validated with their index in the path; oversized batches are BATCH_TOO_LARGE', () => {
    const a = s.array(s.int({ min: 0 }), { minItems: 1, maxItems: 3 });
    expect(a.parse([1, 2, 3])).toEqual([1, 2, 3]);
    rejects(a, [], '<root>');
    rejects(a, 'x', '<root>');
    expect(rejects(a, [1, -2], '[1]').message).toMatch(/^\[1\]: expected integer/);
    const big = rejects(a, [1, 2, 3, 4], '<root>', 'BATCH_TOO_LARGE');
    expect(big.details).toMatchObject({ items: 4, maxItems: 3 });
    // the batch cap is checked before any item is looked at
    rejects(a, [1, 2, 3, 'not-an-int'], '<root>', 'BATCH_TOO_LARGE');
  });

  it('optional: undefined passes, null and wrong types do not', () => {
    const o = s.optional(s.int());
    expect(o.parse(undefined)).toBeUndefined();
    expect(o.parse(3)).toBe(3);
    rejects(o, null, '<root>');
    rejects(o, 'x', '<root>');
  });

  it('object: closed shape, nested paths, missing required fields, unknown fields rejected', () => {
    const o = s.object({
      model: s.string({ minLength: 1 }),
      epoch: s.int({ min: 0 }),
      note: s.optional(s.string()),
      blocks: s.array(s.object({ hash: s.hex(2), bytes: s.int({ min: 1 }) }), { maxItems: 2 }),
    });
    const ok = o.parse({ model: 'm', epoch: 3, blocks: [{ hash: 'abcd', bytes: 1 }] });
    expect(ok).toEqual({ model: 'm', epoch: 3, blocks: [{ hash: 'abcd', bytes: 1 }] });
    expect('note' in ok).toBe(false);
    rejects(o, { epoch: 3, blocks: [] }, 'model');
    rejects(o, { model: 'm', epoch: -1, blocks: [] }, 'epoch');
    rejects(o, { model: 'm', epoch: 1, blocks: [{ hash: 'abcd', bytes: 0 }] }, 'blocks[0].bytes');
    rejects(o, { model: 'm', epoch: 1, blocks: [{ hash: 'abcd', bytes: 1, extra: 1 }] }, 'blocks[0].extra');
    expect(rejects(o, { model: 'm', epoch: 1, blocks: [], epohc: 2 }, 'epohc').message).toBe(
      'epohc: unknown field',
    );
    rejects(o, { model: 'm', epoch: 1, blocks: [{}, {}, {}] }, 'blocks', 'BATCH_TOO_LARGE');
    rejects(o, [], '<root>');
    rejects(o, null, '<root>');
  });

  it('object: inherited property names are unknown fields too', () => {
    const o = s.object({ a: s.optional(s.int()) });
    for (const key of ['toString', 'constructor', 'hasOwnProperty']) rejects(o, { [key]: 1 }, key);
    rejects(o, JSON.parse('{"__proto__": {"a": 1}}'), '__proto__');
  });

  it('describes itself for error messages', () => {
    expect(s.array(s.int({ min: 0, max: 9 }), { maxItems: 5 }).description).toBe(
      'array(0..5) of integer in [0, 9]',
    );
    expect(s.object({ a: s.bool() }).description).toBe('object{a}');
  });
});
