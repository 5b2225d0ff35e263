/**
 * Every way a request can be wrong gets a typed error reply over a REAL nats-server, in both the
 * NATS micro-service headers and the JSON body, and never reaches the handler's side effect.
 */
import { connect, type Msg, type NatsConnection, type Subscription } from '@nats-io/transport-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCode, KvfError, type ErrorCodeName } from '../../shared/errors.js';
import {
  encodeBody,
  MAX_CONTROL_MESSAGE_BYTES,
  PROTOCOL_VERSION,
  request,
  serveEndpoint,
} from '../../shared/protocol/codec.js';
import { s } from '../../shared/protocol/schema.js';
import { uniq, useServers } from '../harness/servers.js';

const putSchema = s.object({
  epoch: s.int({ min: 0 }),
  keys: s.array(s.hex(4), { minItems: 1, maxItems: 8 }),
  mode: s.optional(s.enum(['fail-typed', 'fail-plain', 'slow'] as const)),
});
const okReply = s.object({ stored: s.int({ min: 0 }) });

describe('protocol error transport over a real nats-server', () => {
  const fx = useServers({ redis: false });
  let nc: NatsConnection;
  let sub: Subscription;
  const subject = `kvf.test.${uniq()}.put`;
  /** The handler's side effect: every key it stored. */
  const stored: string[] = [];
  const endpointErrors: string[] = [];

  beforeAll(async () => {
    nc = await connect({ servers: fx.nats.url });
    sub = serveEndpoint(nc, {
      subject,
      schema: putSchema,
      onError: (e) => endpointErrors.push(e.codeName),
      handler: async (req) => {
        if (req.mode === 'fail-typed') {
          throw new KvfError('STALE_EPOCH', `epoch ${req.epoch} is stale`, {
            details: { current: req.epoch + 1 },
          });
        }
        if (req.mode === 'fail-plain') throw new Error('handler bug: cannot read x of undefined');
        if (req.mode === 'slow') await new Promise((r) => setTimeout(r, 1500));
        stored.push(...req.keys);
        return { stored: req.keys.length };
      },
    });
    await nc.flush();
  });

  afterAll(async () => {
    sub?.unsubscribe();
    await nc?.drain();
  });

  /** Send raw bytes; the reply must be a typed error with matching headers and body. */
  async function expectErrorReply(
    data: Uint8Array,
    code: ErrorCodeName,
  ): Promise<{ message: string; details?: unknown }> {
    const before = stored.length;
    const msg: Msg = await nc.request(subject, data, { timeout: 5000 });
    expect(msg.headers?.get('Nats-Service-Error-Code')).toBe(String(ErrorCode[code]));
    const headerMessage = msg.headers?.get('Nats-Service-Error') ?? '';
    expect(headerMessage.length).toBeGreaterThan(0);
    const body = JSON.parse(new TextDecoder().decode(msg.data)) as {
      v: number;
      ok: boolean;
      error: { code: number; name: string; message: string; details?: unknown };
    };
    expect(body.v).toBe(PROTOCOL_VERSION);
    expect(body.ok).toBe(false);
    expect(body.error.code).toBe(ErrorCode[code]);
    expect(body.error.name).toBe(code);
    expect(headerMessage).toBe(body.error.message.replace(/[\r\n]+/g, ' ').slice(0, 1024));
    expect(stored.length, 'the handler must not have run').toBe(before);
    return body.error;
  }

  const json = (o: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(o));

  it('a valid request succeeds and has its side effect (so the checks below can fail)', async () => {
    const out = await request(nc, subject, { epoch: 1, keys: ['00000001'] }, okReply, { timeoutMs: 5000 });
    expect(out).toEqual({ stored: 1 });
    expect(stored).toEqual(['00000001']);
  });

  it('malformed bytes: MALFORMED', async () => {
    await expectErrorReply(new TextEncoder().encode('{not json'), 'MALFORMED');
    await expectErrorReply(new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]), 'MALFORMED');
    await expectErrorReply(json([1, 2, 3]), 'MALFORMED');
    await expectErrorReply(new Uint8Array(0), 'MALFORMED');
  });

  it('wrong or missing protocol version: VERSION_MISMATCH with the supported versions', async () => {
    const e = await expectErrorReply(
      json({ v: PROTOCOL_VERSION + 1, epoch: 1, keys: ['00000002'] }),
      'VERSION_MISMATCH',
    );
    expect(e.details).toEqual({ supported: [PROTOCOL_VERSION] });
    await expectErrorReply(json({ epoch: 1, keys: ['00000002'] }), 'VERSION_MISMATCH');
  });

  it('unknown fields and wrong shapes: BAD_REQUEST naming the field', async () => {
    const e = await expectErrorReply(json({ v: 1, epoch: 1, keys: ['00000003'], epohc: 2 }), 'BAD_REQUEST');
    expect(e.message).toBe('epohc: unknown field');
    const e2 = await expectErrorReply(json({ v: 1, epoch: 1, keys: ['00000003', 'XYZ'] }), 'BAD_REQUEST');
    expect(e2.message).toMatch(/^keys\[1\]: expected 4-byte lowercase hex/);
    await expectErrorReply(json({ v: 1, epoch: -1, keys: ['00000003'] }), 'BAD_REQUEST');
  });

  it('oversized batches: BATCH_TOO_LARGE; oversized messages: PAYLOAD_TOO_LARGE', async () => {
    const keys = Array.from({ length: 9 }, (_, i) => i.toString(16).padStart(8, '0'));
    const e = await expectErrorReply(json({ v: 1, epoch: 1, keys }), 'BATCH_TOO_LARGE');
    expect(e.details).toMatchObject({ items: 9, maxItems: 8 });
    // under nats-server's 1 MiB max_payload, over kvfabric's control-message cap
    const pad = 'x'.repeat(MAX_CONTROL_MESSAGE_BYTES);
    await expectErrorReply(json({ v: 1, epoch: 1, keys: ['00000004'], pad }), 'PAYLOAD_TOO_LARGE');
  });

  it('a handler that throws a KvfError: that code and details travel to the caller', async () => {
    const e = await expectErrorReply(
      encodeBody({ epoch: 7, keys: ['00000005'], mode: 'fail-typed' }),
      'STALE_EPOCH',
    );
    expect(e).toMatchObject({ message: 'epoch 7 is stale', details: { current: 8 } });
    // and request() rebuilds it as a KvfError the caller can branch on
    const err = await request(nc, subject, { epoch: 7, keys: ['00000005'], mode: 'fail-typed' }, okReply, {
      timeoutMs: 5000,
    }).catch((x: unknown) => x);
    expect(err).toBeInstanceOf(KvfError);
    expect((err as KvfError).codeName).toBe('STALE_EPOCH');
    expect((err as KvfError).details).toEqual({ current: 8 });
  });

  it('a handler that throws a plain Error: INTERNAL, and the endpoint keeps serving', async () => {
    const e = await expectErrorReply(
      encodeBody({ epoch: 1, keys: ['00000006'], mode: 'fail-plain' }),
      'INTERNAL',
    );
    expect(e.message).toMatch(/handler bug/);
    const out = await request(nc, subject, { epoch: 1, keys: ['00000007'] }, okReply, { timeoutMs: 5000 });
    expect(out.stored).toBe(1);
  });

  it('a publish without a reply inbox is dropped without breaking the endpoint', async () => {
    nc.publish(subject, new TextEncoder().encode('garbage'));
    await nc.flush();
    const out = await request(nc, subject, { epoch: 1, keys: ['00000008'] }, okReply, { timeoutMs: 5000 });
    expect(out.stored).toBe(1);
  });

  it('onError saw every error reply', () => {
    for (const code of [
      'MALFORMED',
      'VERSION_MISMATCH',
      'BAD_REQUEST',
      'BATCH_TOO_LARGE',
      'PAYLOAD_TOO_LARGE',
      'STALE_EPOCH',
      'INTERNAL',
    ]) {
      expect(endpointErrors).toContain(code);
    }
    expect(stored).toEqual(['00000001', '00000007', '00000008']);
  });

  it('request(): no responders is PEER_UNREACHABLE, a slow handler is TIMEOUT', async () => {
    const nobody = await request(nc, `kvf.test.${uniq()}.nobody`, { x: 1 }, okReply, {
      timeoutMs: 2000,
    }).catch((x: unknown) => x);
    expect(nobody).toBeInstanceOf(KvfError);
    expect((nobody as KvfError).codeName).toBe('PEER_UNREACHABLE');

    const t0 = Date.now();
    const slow = await request(nc, subject, { epoch: 1, keys: ['00000009'], mode: 'slow' }, okReply, {
      timeoutMs: 200,
    }).catch((x: unknown) => x);
    expect(slow).toBeInstanceOf(KvfError);
    expect((slow as KvfError).codeName).toBe('TIMEOUT');
    expect((slow as KvfError).details).toMatchObject({ subject, timeoutMs: 200 });
    expect(Date.now() - t0).toBeLessThan(1400);
  });
});
