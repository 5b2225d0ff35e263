/**
 * The seed's single-layer convenience API on top of the block API:
 *
 *   cacheKv(prefix, layer, k, v)       k, v: [kvHeads, tokens, headDim] in the profile's dtype
 *   getCachedKv(prefix, layer)        -> {k, v, tokens} for the longest cached prefix, or null
 *
 * Each (model, layer) is stored as its own derived model, id `${model}:L${layer}`, a copy of the
 * base profile with layers = 1 (registered with the coordinator on first use; idempotent). Its
 * layout is one layer group of one layer, so a block is [1, 2, kvHeads, chunkTokens, headDim] and
 * all block, checksum, placement and index rules stay those of the block API. Hashes mix in the
 * derived id, so layers never see each other's entries. The cost: every layer is one more model
 * on every shard node (one arena region each), so engines that handle whole layer groups should
 * use get/put directly.
 *
 * Typed arrays by dtype: fp16 / bf16 -> Uint16Array (raw bits), fp32 -> Float32Array,
 * fp8_e4m3 -> Uint8Array.
 */
import { KvfError } from '../errors.js';
import { fullChunks } from '../hashing.js';
import { DTYPE_BYTES, PROFILE_LIMITS, validateProfile, type Dtype, type ModelProfile } from '../profiles.js';
import type { KvfClient, CallOptions, Tokens } from './client.js';
import type { PutResult } from './put.js';

export type KvTypedArray = Uint16Array | Float32Array | Uint8Array;

export interface CachedKv {
  k: KvTypedArray;
  v: KvTypedArray;
  /** Tokens covered: a multiple of chunkTokens, at most prefix.length. */
  tokens: number;
}

/** Id of the derived single-layer model. */
export function layerModelId(model: string, layer: number): string {
  return `${model}:L${layer}`;
}

/** The derived single-layer profile of `layer` of `base`. */
export function layerProfile(base: ModelProfile, layer: number): ModelProfile {
  if (!Number.isSafeInteger(layer) || layer < 0 || layer >= base.layers) {
    throw new KvfError(
      'BAD_REQUEST',
      `layer: expected an integer in [0, ${base.layers}) for ${base.id}, got ${layer}`,
    );
  }
  const id = layerModelId(base.id, layer);
  if (id.length > PROFILE_LIMITS.idLengthMax) {
    throw new KvfError(
      'INVALID_PROFILE',
      `derived model id ${id} exceeds ${PROFILE_LIMITS.idLengthMax} chars`,
    );
  }
  return validateProfile({ ...base, id, layers: 1 });
}

function newTyped(dtype: Dtype, length: number): KvTypedArray {
  if (dtype === 'fp32') return new Float32Array(length);
  if (dtype === 'fp8_e4m3') return new Uint8Array(length);
  return new Uint16Array(length);
}

function checkTyped(name: string, a: unknown, dtype: Dtype, length: number): KvTypedArray {
  const ok =
    dtype === 'fp32'
      ? a instanceof Float32Array
      : dtype === 'fp8_e4m3'
        ? a instanceof Uint8Array
        : a instanceof Uint16Array;
  if (!ok) {
    throw new KvfError(
      'DTYPE_MISMATCH',
      `${name}: a ${dtype} profile needs a ${newTyped(dtype, 0).constructor.name}`,
    );
  }
  const t = a as KvTypedArray;
  if (t.length !== length) {
    throw new KvfError(
      'SHAPE_MISMATCH',
      `${name}: expected ${length} elements ([kvHeads, tokens, headDim]), got ${t.length}`,
    );
  }
  return t;
}

const bytesOf = (t: KvTypedArray): Uint8Array => new Uint8Array(t.buffer, t.byteOffset, t.byteLength);

/**
 * Copy between [kvHeads, tokens, headDim] tensors (K and V) and chunk-major blocks
 * [1, 2, kvHeads, chunkTokens, headDim]. One memcpy per (chunk, K|V, head): a head's rows of one
 * chunk are contiguous on both sides.
 */
function transpose(
  p: ModelProfile,
  chunks: number,
  tokens: number,
  tensors: { k: Uint8Array; v: Uint8Array },
  blocks: Uint8Array,
  toBlocks: boolean,
): void {
  const rowBytes = p.headDim * DTYPE_BYTES[p.dtype];
  const runBytes = p.chunkTokens * rowBytes;
  const headBytes = tokens * rowBytes;
  const blockBytes = 2 * p.kvHeads * runBytes;
  for (let c = 0; c < chunks; c++) {
    [tensors.k, tensors.v].forEach((t, kv) => {
      for (let h = 0; h < p.kvHeads; h++) {
        const tOff = h * headBytes + c * runBytes;
        const bOff = c * blockBytes + (kv * p.kvHeads + h) * runBytes;
        if (toBlocks) blocks.set(t.subarray(tOff, tOff + runBytes), bOff);
        else t.set(blocks.subarray(bOff, bOff + runBytes), tOff);
      }
    });
  }
}

async function derived(client: KvfClient, layer: number, opts: CallOptions): Promise<ModelProfile> {
  const model = opts.model ?? client.options.model;
  if (model === undefined)
    throw new KvfError('BAD_REQUEST', 'no model: pass {model} or connect with a default model');
  const base = await client.resolveProfile(model, true);
  const p = layerProfile(base, layer);
  await client.ensureRegistered(p);
  return p;
}

export async function cacheKv(
  client: KvfClient,
  prefix: Tokens,
  layer: number,
  k: KvTypedArray,
  v: KvTypedArray,
  opts: CallOptions = {},
): Promise<PutResult> {
  const p = await derived(client, layer, opts);
  const tokens = prefix.length;
  const n = p.kvHeads * tokens * p.headDim;
  const kt = bytesOf(checkTyped('k', k, p.dtype, n));
  const vt = bytesOf(checkTyped('v', v, p.dtype, n));
  const chunks = fullChunks(tokens, p.chunkTokens);
  const blocks = (await client.allocKv(chunks * p.chunkTokens, { model: p.id })).groups[0] as Uint8Array;
  transpose(p, chunks, tokens, { k: kt, v: vt }, blocks, true);
  return client.put(prefix, { groups: [blocks] }, { ...opts, model: p.id });
}

export async function getCachedKv(
  client: KvfClient,
  prefix: Tokens,
  layer: number,
  opts: CallOptions = {},
): Promise<CachedKv | null> {
  const p = await derived(client, layer, opts);
  const chunks = fullChunks(prefix.length, p.chunkTokens);
  if (chunks === 0) return null;
  const target = await client.allocKv(chunks * p.chunkTokens, { model: p.id });
  const tokens = await client.get(prefix, target, { ...opts, model: p.id });
  if (tokens === 0) return null;
  const n = p.kvHeads * tokens * p.headDim;
  const k = newTyped(p.dtype, n);
  const v = newTyped(p.dtype, n);
  transpose(
    p,
    tokens / p.chunkTokens,
    tokens,
    { k: bytesOf(k), v: bytesOf(v) },
    target.groups[0] as Uint8Array,
    false,
  );
  return { k, v, tokens };
}
