import {
  headers,
  NoRespondersError,
  RequestError,
  TimeoutError,
  type Msg,
  type MsgHdrs,
} from '@nats-io/transport-node';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { ErrorCode, KvfError, type ErrorCodeName } from '../../shared/errors.js';
import {
  decodeEnvelope,
  decodeReply,
  decodeRequest,
  encodeBody,
  mapNatsRequestError,
  MAX_CONTROL_MESSAGE_BYTES,
  PROTOCOL_VERSION,
} from '../../shared/protocol/codec.js';
import { s } from '../../shared/protocol/schema.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const enc = new TextEncoder();
const bytes = (text: string): Uint8Array => enc.encode(text);

function codeOf(fn: () => unknown): ErrorCodeName {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(KvfError);
    return (err as KvfError).codeName;
  }
  throw new Error('expected a KvfError');
}

/** decodeReply only reads `data` and `headers`; a minimal Msg stands in (pure logic, no NATS). */
function reply(body: unknown, hdrs?: MsgHdrs): Msg {
  const data = body instanceof Uint8Array ? body : bytes(JSON.stringify(body));
  return { data, headers: hdrs } as unknown as Msg;
}

describe('envelope encode/decode', () => {
  it('round-trips through the version envelope, with u64 as decimal strings and bytes as base64', () => {
    const addr = 0xfedcba9876543210n;
    const rkey = Buffer.from([0, 1, 2, 250, 251, 255]);
    const raw = new Uint8Array([9, 8, 7]);
    const wire = encodeBody({ addr, rkey, raw, n: 3, nested: { list: [addr] } });
    const text = new TextDecoder().decode(wire);
    const json = JSON.parse(text) as Record<string, unknown>;
    expect(json.v).toBe(PROTOCOL_VERSION);
    expect(json.addr).toBe('18364758544493064720');
    expect(json.rkey).toBe(rkey.toString('base64'));
    expect(json.raw).toBe(Buffer.from(raw).toString('base64'));

    const schema = s.object({
      addr: s.u64(),
      rkey: s.base64({ maxBytes: 64 }),
      raw: s.base64({ maxBytes: 3 }),
      n: s.int(),
      nested: s.object({ list: s.array(s.u64(), { maxItems: 4 }) }),
    });
    const back = decodeRequest(wire, schema);
    expect(back.addr).toBe(addr);
    expect(Buffer.compare(back.rkey, rkey)).toBe(0);
    expect([...back.raw]).toEqual([9, 8, 7]);
    expect(back.nested.list).toEqual([addr]);
    expect(decodeEnvelope(wire)).not.toHaveProperty('v');
  });

  it('refuses to encode a body that carries its own v (programmer error)', () => {
    expect(() => encodeBody({ v: 2, x: 1 })).toThrow(/`v` field/);
  });

  it('PAYLOAD_TOO_LARGE on both sides of the wire', () => {
    const big = 'x'.repeat(MAX_CONTROL_MESSAGE_BYTES);
    expect(codeOf(() => encodeBody({ big }))).toBe('PAYLOAD_TOO_LARGE');
    expect(codeOf(() => decodeEnvelope(new Uint8Array(MAX_CONTROL_MESSAGE_BYTES + 1)))).toBe(
      'PAYLOAD_TOO_LARGE',
    );
    // just under the limit is fine
    const fits = encodeBody({ s: 'y'.repeat(MAX_CONTROL_MESSAGE_BYTES - 100) });
    expect(decodeEnvelope(fits)).toHaveProperty('s');
  });

  it('MALFORMED for non-JSON, non-object JSON and invalid UTF-8', () => {
    for (const text of ['', 'not json', '{"v":1', '[1,2]', '"str"', 'null', '42', 'true']) {
      expect(
        codeOf(() => decodeEnvelope(bytes(text))),
        text,
      ).toBe('MALFORMED');
    }
    // {"v":1,"s":"<0xff>"}: valid JSON shape, invalid UTF-8 inside a string
    const invalidUtf8 = new Uint8Array([...bytes('{"v":1,"s":"'), 0xff, 0xfe, ...bytes('"}')]);
    expect(codeOf(() => decodeEnvelope(invalidUtf8))).toBe('MALFORMED');
    // a lone continuation byte and a truncated multi-byte sequence
    expect(
      codeOf(() => decodeEnvelope(new Uint8Array([...bytes('{"v":1,"s":"'), 0x80, ...bytes('"}')]))),
    ).toBe('MALFORMED');
    expect(codeOf(() => decodeEnvelope(new Uint8Array([...bytes('{"v":1,"s":"'), 0xe2, 0x82])))).toBe(
      'MALFORMED',
    );
  });

  it('VERSION_MISMATCH for another, missing or mistyped version, with the supported list', () => {
    for (const body of [{ v: PROTOCOL_VERSION + 1 }, {}, { v: String(PROTOCOL_VERSION) }, { v: 0 }]) {
      let caught: unknown;
      try {
        decodeEnvelope(bytes(JSON.stringify(body)));
      } catch (err) {
        caught = err;
      }
      expect(caught).toBeInstanceOf(KvfError);
      expect((caught as KvfError).codeName).toBe('VERSION_MISMATCH');
      expect((caught as KvfError).details).toEqual({ supported: [PROTOCOL_VERSION] });
    }
  });

  it('schema failures after a good envelope are BAD_REQUEST naming the field', () => {
    const schema = s.object({ n: s.int({ min: 0 }) });
    expect(() => decodeRequest(bytes('{"v":1,"n":-1}'), schema)).toThrow(/^n: expected integer/);
    expect(codeOf(() => decodeRequest(bytes('{"v":1,"n":1,"m":2}'), schema))).toBe('BAD_REQUEST');
  });
});

describe('decodeReply', () => {
  const schema = s.object({ n: s.int() });

  it('returns the validated result of a success reply, without v and ok', () => {
    expect(decodeReply(reply({ v: 1, ok: true, n: 5 }), schema)).toEqual({ n: 5 });
  });

  it('rebuilds the remote KvfError from headers and body', () => {
    const h = headers();
    h.set('Nats-Service-Error', 'epoch 3 is stale');
    h.set('Nats-Service-Error-Code', '1200');
    const body = {
      v: 1,
      ok: false,
      error: { code: 1200, name: 'STALE_EPOCH', message: 'epoch 3 is stale', details: { current: 4 } },
    };
    const err = (() => {
      try {
        decodeReply(reply(body, h), schema);
      } catch (e) {
        return e as KvfError;
      }
      throw new Error('expected an error');
    })();
    expect(err.codeName).toBe('STALE_EPOCH');
    expect(err.message).toBe('epoch 3 is stale');
    expect(err.details).toEqual({ current: 4 });
  });

  it('trusts the error headers even when the body cannot be decoded', () => {
    const h = headers();
    h.set('Nats-Service-Error', 'version 2 not supported');
    h.set('Nats-Service-Error-Code', '1003');
    expect(() => decodeReply(reply(bytes('{"v":2,"ok":false}'), h), schema)).toThrow(
      'version 2 not supported',
    );
    expect(codeOf(() => decodeReply(reply(bytes('garbage'), h), schema))).toBe('VERSION_MISMATCH');
  });

  it('an error body without headers is still an error; unknown codes become INTERNAL keeping the code', () => {
    expect(
      codeOf(() => decodeReply(reply({ v: 1, ok: false, error: { code: 1301, message: 'gone' } }), schema)),
    ).toBe('BLOCK_NOT_FOUND');
    try {
      decodeReply(reply({ v: 1, ok: false, error: { code: 1999, message: 'new' } }), schema);
      throw new Error('expected an error');
    } catch (e) {
      expect((e as KvfError).codeName).toBe('INTERNAL');
      expect((e as KvfError).details).toMatchObject({ remoteCode: 1999 });
    }
  });
});

describe('mapNatsRequestError', () => {
  it('no responders -> PEER_UNREACHABLE, timeout -> TIMEOUT, anything else -> TRANSPORT', () => {
    const noResp = new RequestError('no responders', { cause: new NoRespondersError('a.b') });
    expect(mapNatsRequestError(noResp, 'a.b', 100).codeName).toBe('PEER_UNREACHABLE');
    expect(mapNatsRequestError(new TimeoutError(), 'a.b', 100)).toMatchObject({
      codeName: 'TIMEOUT',
      details: { subject: 'a.b', timeoutMs: 100 },
    });
    expect(mapNatsRequestError(new Error('closed'), 'a.b', 100).codeName).toBe('TRANSPORT');
    const kvf = new KvfError('CLOSED', 'closed');
    expect(mapNatsRequestError(kvf, 'a.b', 100)).toBe(kvf);
  });
});

describe('docs/protocol.md', () => {
  it('documents every error code with its number and name', () => {
    const doc = readFileSync(path.join(repo, 'docs/protocol.md'), 'utf8');
    const documented = new Map<string, number>();
    for (const m of doc.matchAll(/^\| (\d{4}) +\| `([A-Z_]+)` +\|/gm))
      documented.set(m[2] as string, Number(m[1]));
    expect(Object.fromEntries(documented)).toEqual({ ...ErrorCode });
  });
});
