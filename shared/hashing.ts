/**
 * Chained chunk hashes, key scheme v1 (the normative spec with test vectors is docs/keys.md;
 * engines in other languages implement the same bytes, so change nothing here without a new
 * KEY_SCHEME_VERSION).
 *
 *   seed  = sha256("kvfabric/keys/v1" || u32le(len(modelId)) || modelId || u32le(len(ns)) || ns)
 *   h[-1] = seed
 *   h[i]  = sha256(h[i-1] || u32le(t) for each token t of chunk i)     (32-byte digests)
 *
 * Only full chunks are hashed. A chunk hash therefore names its whole prefix, so longest-prefix
 * match is "count the leading hashes that are present". sha256 rather than a fast hash: whoever
 * can craft collisions could make a victim read someone else's KV.
 */
import { createHash } from 'node:crypto';
import { endianness } from 'node:os';
import { KvfError } from './errors.js';

export const KEY_SCHEME_VERSION = 1;

/** Domain-separation tag at the start of the seed preimage (ASCII, no terminator). */
export const KEY_SCHEME_TAG = 'kvfabric/keys/v1';

/** Largest token id a u32 can carry. */
export const TOKEN_ID_MAX = 0xffff_ffff;

export interface ChunkHashOptions {
  modelId: string;
  namespace: string;
  chunkTokens: number;
}

const LITTLE_ENDIAN_HOST = endianness() === 'LE';

function u32le(n: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32LE(n, 0);
  return b;
}

/**
 * h[-1]: the seed that mixes in the model and the namespace (tenant). Both strings are
 * length-prefixed, so ("ab", "c") and ("a", "bc") give different seeds.
 */
export function seedHash(modelId: string, namespace: string): Buffer {
  if (typeof modelId !== 'string' || typeof namespace !== 'string') {
    throw new KvfError('BAD_REQUEST', 'seedHash: modelId and namespace must be strings');
  }
  const model = Buffer.from(modelId, 'utf8');
  const ns = Buffer.from(namespace, 'utf8');
  return createHash('sha256')
    .update(KEY_SCHEME_TAG, 'ascii')
    .update(u32le(model.length))
    .update(model)
    .update(u32le(ns.length))
    .update(ns)
    .digest();
}

/** Number of full chunks in a prompt of `tokenCount` tokens (the partial tail is not hashed). */
export function fullChunks(tokenCount: number, chunkTokens: number): number {
  assertChunkTokens(chunkTokens);
  if (!Number.isSafeInteger(tokenCount) || tokenCount < 0) {
    throw new KvfError('BAD_REQUEST', `tokenCount must be a non-negative integer, got ${tokenCount}`);
  }
  return Math.floor(tokenCount / chunkTokens);
}

function assertChunkTokens(chunkTokens: number): void {
  if (!Number.isSafeInteger(chunkTokens) || chunkTokens < 1) {
    throw new KvfError('BAD_REQUEST', `chunkTokens must be a positive integer, got ${chunkTokens}`, {
      details: { chunkTokens },
    });
  }
}

function badToken(index: number, value: unknown): never {
  throw new KvfError(
    'BAD_REQUEST',
    `tokens[${index}]: expected an integer in [0, ${TOKEN_ID_MAX}], got ${String(value)}`,
    { details: { index } },
  );
}

/**
 * The first `count` tokens as u32 little-endian bytes, in one buffer. Uint32Array input on a
 * little-endian host is used in place (it cannot hold an invalid id); anything else is validated
 * and copied once, without per-token allocations.
 */
function tokenBytes(tokens: ArrayLike<number>, count: number): Buffer {
  if (LITTLE_ENDIAN_HOST && tokens instanceof Uint32Array) {
    return Buffer.from(tokens.buffer, tokens.byteOffset, count * 4);
  }
  const buf = Buffer.allocUnsafe(count * 4);
  if (LITTLE_ENDIAN_HOST) {
    const out = new Uint32Array(buf.buffer, buf.byteOffset, count);
    for (let i = 0; i < count; i++) {
      const t = tokens[i] as number;
      // Integer check without a call: t >>> 0 === t holds exactly for integers in [0, 2^32).
      if (t >>> 0 !== t) badToken(i, t);
      out[i] = t;
    }
  } else {
    for (let i = 0; i < count; i++) {
      const t = tokens[i] as number;
      if (t >>> 0 !== t) badToken(i, t);
      buf.writeUInt32LE(t, i * 4);
    }
  }
  return buf;
}

/** Validates the ids of the partial tail too: a request with a bad token id is a bad request. */
function validateTail(tokens: ArrayLike<number>, from: number): void {
  if (tokens instanceof Uint32Array) return;
  for (let i = from; i < tokens.length; i++) {
    const t = tokens[i] as number;
    if (t >>> 0 !== t) badToken(i, t);
  }
}

/** h[0..n-1] as 32-byte Buffers, for the n full chunks of `tokens`. */
export function chunkHashesRaw(tokens: ArrayLike<number>, opts: ChunkHashOptions): Buffer[] {
  const n = fullChunks(tokens.length, opts.chunkTokens);
  const hashed = n * opts.chunkTokens;
  const bytes = tokenBytes(tokens, hashed);
  validateTail(tokens, hashed);
  const chunkBytes = opts.chunkTokens * 4;
  const out: Buffer[] = new Array<Buffer>(n);
  let prev = seedHash(opts.modelId, opts.namespace);
  for (let i = 0; i < n; i++) {
    const start = i * chunkBytes;
    prev = createHash('sha256')
      .update(prev)
      .update(bytes.subarray(start, start + chunkBytes))
      .digest();
    out[i] = prev;
  }
  return out;
}

/** h[0..n-1] as 64-char lowercase hex strings, for the n full chunks of `tokens`. */
export function chunkHashes(tokens: ArrayLike<number>, opts: ChunkHashOptions): string[] {
  return chunkHashesRaw(tokens, opts).map((h) => h.toString('hex'));
}
