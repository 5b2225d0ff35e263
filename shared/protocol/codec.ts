/**
 * How requests, replies and errors travel over NATS.
 *
 * - Bodies are JSON objects carrying `v` (the protocol version). u64 values (addresses) travel as
 *   decimal strings and bytes (rkeys, worker addresses) as base64, so JSON stays exact.
 * - A success reply is `{v, ok: true, ...result}`.
 * - An error reply carries the NATS micro-service headers `Nats-Service-Error` (message) and
 *   `Nats-Service-Error-Code` (kvfabric's numeric code) and the body
 *   `{v, ok: false, error: {code, name, message, details?}}`.
 * - Every incoming message is size-checked, JSON-decoded, version-checked and schema-validated
 *   before a handler sees it; anything else gets a typed error reply, never silence.
 */
import {
  headers,
  NoRespondersError,
  RequestError,
  TimeoutError,
  type Msg,
  type NatsConnection,
  type Subscription,
} from '@nats-io/transport-node';
import assert from 'node:assert/strict';
import { KvfError, toKvfError } from '../errors.js';
import type { Schema } from './schema.js';

export const PROTOCOL_VERSION = 1;
/** Control messages are small; NATS' default max_payload is 1 MiB and bulk bytes never go here. */
export const MAX_CONTROL_MESSAGE_BYTES = 512 * 1024;

const enc = new TextEncoder();
const dec = new TextDecoder('utf-8', { fatal: true });

function replacer(_k: string, v: unknown): unknown {
  if (typeof v === 'bigint') return v.toString();
  if (v instanceof Uint8Array) return Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('base64');
  if (
    v &&
    typeof v === 'object' &&
    (v as { type?: unknown }).type === 'Buffer' &&
    Array.isArray((v as { data?: unknown }).data)
  ) {
    return Buffer.from((v as { data: number[] }).data).toString('base64');
  }
  return v;
}

export function encodeBody(body: Record<string, unknown>): Uint8Array {
  // `v` is the envelope's: a body field of that name would silently rewrite the version.
  assert(!Object.hasOwn(body, 'v'), 'message bodies must not carry their own `v` field');
  const bytes = enc.encode(JSON.stringify({ v: PROTOCOL_VERSION, ...body }, replacer));
  if (bytes.byteLength > MAX_CONTROL_MESSAGE_BYTES) {
    throw new KvfError(
      'PAYLOAD_TOO_LARGE',
      `message of ${bytes.byteLength} bytes exceeds ${MAX_CONTROL_MESSAGE_BYTES}`,
    );
  }
  return bytes;
}

/** Size check, JSON decode, version check; returns the object without `v`. */
export function decodeEnvelope(data: Uint8Array): Record<string, unknown> {
  if (data.byteLength > MAX_CONTROL_MESSAGE_BYTES) {
    throw new KvfError(
      'PAYLOAD_TOO_LARGE',
      `message of ${data.byteLength} bytes exceeds ${MAX_CONTROL_MESSAGE_BYTES}`,
    );
  }
  let obj: unknown;
  try {
    obj = JSON.parse(dec.decode(data));
  } catch (err) {
    throw new KvfError('MALFORMED', 'message is not valid UTF-8 JSON', { cause: err });
  }
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) {
    throw new KvfError('MALFORMED', 'message must be a JSON object');
  }
  const { v, ...rest } = obj as Record<string, unknown>;
  if (v !== PROTOCOL_VERSION) {
    throw new KvfError(
      'VERSION_MISMATCH',
      `protocol version ${String(v)} not supported (this node speaks ${PROTOCOL_VERSION})`,
      {
        details: { supported: [PROTOCOL_VERSION] },
      },
    );
  }
  return rest;
}

export function decodeRequest<T>(data: Uint8Array, schema: Schema<T>): T {
  return schema.parse(decodeEnvelope(data));
}

export function respondError(msg: Msg, err: unknown): void {
  const e = toKvfError(err);
  const h = headers();
  h.set('Nats-Service-Error', e.message.replace(/[\r\n]+/g, ' ').slice(0, 1024));
  h.set('Nats-Service-Error-Code', String(e.code));
  const body = enc.encode(JSON.stringify({ v: PROTOCOL_VERSION, ok: false, error: e.toJSON() }, replacer));
  msg.respond(body, { headers: h });
}

export function respondOk(msg: Msg, result: Record<string, unknown>): void {
  msg.respond(encodeBody({ ok: true, ...result }));
}

/** Decode a reply: throws the remote KvfError for error replies, validates success replies. */
export function decodeReply<T>(msg: Msg, schema: Schema<T>): T {
  const code = msg.headers?.get('Nats-Service-Error-Code');
  if (code) {
    // The headers alone identify an error reply: a body this node cannot decode (another
    // protocol version, say) must not hide the remote error behind a local MALFORMED.
    let body: Record<string, unknown> = {};
    try {
      body = decodeEnvelope(msg.data);
    } catch {
      // keep the header's code and message
    }
    const e = (body.error ?? {}) as { message?: string; details?: Record<string, unknown> };
    throw KvfError.fromWire(
      Number(code),
      e.message ?? msg.headers?.get('Nats-Service-Error') ?? 'remote error',
      e.details,
    );
  }
  const body = decodeEnvelope(msg.data);
  if (body.ok === false) {
    const e = (body.error ?? {}) as { code?: number; message?: string; details?: Record<string, unknown> };
    const c = Number(e.code ?? 1900);
    throw KvfError.fromWire(
      c,
      e.message ?? msg.headers?.get('Nats-Service-Error') ?? 'remote error',
      e.details,
    );
  }
  const { ok: _ok, ...rest } = body;
  return schema.parse(rest);
}

export interface RequestOpts {
  timeoutMs: number;
}

/** One request/reply with typed errors: TIMEOUT, PEER_UNREACHABLE (no responders) or the remote error. */
export async function request<T>(
  nc: NatsConnection,
  subject: string,
  body: Record<string, unknown>,
  replySchema: Schema<T>,
  opts: RequestOpts,
): Promise<T> {
  let msg: Msg;
  try {
    msg = await nc.request(subject, encodeBody(body), { timeout: opts.timeoutMs });
  } catch (err) {
    throw mapNatsRequestError(err, subject, opts.timeoutMs);
  }
  return decodeReply(msg, replySchema);
}

export function mapNatsRequestError(err: unknown, subject: string, timeoutMs: number): KvfError {
  if (err instanceof KvfError) return err;
  const cause = err instanceof RequestError ? (err.cause ?? err) : err;
  if (cause instanceof NoRespondersError || (err instanceof RequestError && err.isNoResponders())) {
    return new KvfError('PEER_UNREACHABLE', `no responder on ${subject}`, {
      cause: err,
      details: { subject },
    });
  }
  if (cause instanceof TimeoutError || err instanceof TimeoutError) {
    return new KvfError('TIMEOUT', `request on ${subject} timed out after ${timeoutMs} ms`, {
      cause: err,
      details: { subject, timeoutMs },
    });
  }
  return new KvfError(
    'TRANSPORT',
    `request on ${subject} failed: ${String((err as Error)?.message ?? err)}`,
    {
      cause: err,
    },
  );
}

export interface EndpointOptions<Req> {
  subject: string;
  /** Queue group: several instances share the load (coordinators); omit for per-node subjects. */
  queue?: string;
  schema: Schema<Req>;
  handler: (req: Req, msg: Msg) => Promise<Record<string, unknown>> | Record<string, unknown>;
  /** Called with every error reply, for logs and metrics. */
  onError?: (err: KvfError, subject: string) => void;
}

/**
 * Serve one endpoint: every message is validated, every failure becomes a typed error reply.
 * Handlers run concurrently; the returned subscription stops the endpoint when unsubscribed.
 */
export function serveEndpoint<Req>(nc: NatsConnection, opts: EndpointOptions<Req>): Subscription {
  const sub = nc.subscribe(opts.subject, opts.queue ? { queue: opts.queue } : {});
  const handle = async (msg: Msg): Promise<void> => {
    if (!msg.reply) return; // a publish without a reply inbox cannot be answered
    try {
      const req = decodeRequest(msg.data, opts.schema);
      respondOk(msg, await opts.handler(req, msg));
    } catch (err) {
      const e = toKvfError(err);
      opts.onError?.(e, opts.subject);
      try {
        respondError(msg, e);
      } catch {
        // connection closing: nothing more to do
      }
    }
  };
  // The iterator throws when the server refuses the subscription (permissions): report it, never
  // let it become an unhandled rejection that kills the process.
  void (async () => {
    for await (const msg of sub) void handle(msg);
  })().catch((err: unknown) => opts.onError?.(toKvfError(err), opts.subject));
  return sub;
}
