/**
 * Model profiles: the shape of one model's KV cache. A profile is registered once per model and
 * fixes every block's size and layout; a block that does not match its profile is rejected.
 *
 * Block layout (one chunk of one layer group): [layersInGroup, 2 (K,V), kvHeads, chunkTokens,
 * headDim] in the profile's dtype, row-major. Arenas allocate fixed-size blocks of
 * `maxBlockBytes(profile, groupCount)` so that any group's block fits any slot.
 */
import { KvfError } from './errors.js';
import { s } from './protocol/schema.js';

export type Dtype = 'fp16' | 'bf16' | 'fp32' | 'fp8_e4m3';

export const DTYPES: readonly Dtype[] = ['fp16', 'bf16', 'fp32', 'fp8_e4m3'];

export const DTYPE_BYTES: Record<Dtype, number> = { fp16: 2, bf16: 2, fp32: 4, fp8_e4m3: 1 };

export interface ModelProfile {
  id: string;
  layers: number;
  kvHeads: number;
  headDim: number;
  dtype: Dtype;
  chunkTokens: number;
}

/**
 * Upper bounds. They exist to catch unit mistakes and hostile input early, not to limit real
 * models; each leaves several times the headroom of today's largest public models. With all of
 * them at their maximum, bytesPerChunk is 2^48, still an exact integer in a JS number (< 2^53).
 */
export const PROFILE_LIMITS = {
  /** Model ids become NATS subject tokens and Redis key parts: keep them short and safe. */
  idLengthMax: 128,
  /** Llama-3.1-405B has 126 layers; 512 is 4x that. */
  layersMax: 512,
  /** Full multi-head attention models have kvHeads == heads, at most 128 today. */
  kvHeadsMax: 1024,
  /** Typical head dims are 64..256; MLA latents (DeepSeek) are 576. */
  headDimMax: 1024,
  /**
   * A chunk is the unit of hashing and of one block; 64K tokens is already larger than most
   * contexts, so a larger chunk could never be hit. Blocks must stay allocatable too.
   */
  chunkTokensMax: 65536,
} as const;

const ID_PATTERN = /^[A-Za-z0-9._:/-]+$/;

const profileSchema = s.object({
  id: s.string({ minLength: 1, maxLength: PROFILE_LIMITS.idLengthMax, pattern: ID_PATTERN }),
  layers: s.int({ min: 1, max: PROFILE_LIMITS.layersMax }),
  kvHeads: s.int({ min: 1, max: PROFILE_LIMITS.kvHeadsMax }),
  headDim: s.int({ min: 1, max: PROFILE_LIMITS.headDimMax }),
  dtype: s.enum(DTYPES),
  chunkTokens: s.int({ min: 1, max: PROFILE_LIMITS.chunkTokensMax }),
});

/**
 * Parse an untrusted value into a ModelProfile. Unknown fields are rejected (a typo such as
 * `kv_heads` must not pass silently). Throws KvfError('INVALID_PROFILE') naming the field and
 * the expected value.
 */
export function validateProfile(x: unknown): ModelProfile {
  try {
    const p = profileSchema.parse(x);
    return {
      id: p.id,
      layers: p.layers,
      kvHeads: p.kvHeads,
      headDim: p.headDim,
      dtype: p.dtype,
      chunkTokens: p.chunkTokens,
    };
  } catch (err) {
    // The schema library speaks BAD_REQUEST; profile callers expect INVALID_PROFILE.
    if (err instanceof KvfError) {
      throw new KvfError('INVALID_PROFILE', `invalid model profile: ${err.message}`, {
        details: err.details,
        cause: err,
      });
    }
    throw err;
  }
}

/** KV bytes of one token across all layers: 2 (K and V) x layers x kvHeads x headDim x dtype. */
export function bytesPerToken(p: ModelProfile): number {
  return 2 * p.layers * p.kvHeads * p.headDim * DTYPE_BYTES[p.dtype];
}

/** KV bytes of one full chunk across all layers. */
export function bytesPerChunk(p: ModelProfile): number {
  return bytesPerToken(p) * p.chunkTokens;
}

export interface LayerGroup {
  index: number;
  firstLayer: number;
  layers: number;
}

/**
 * Split the profile's layers into `groupCount` contiguous groups, as evenly as possible; the
 * first `layers % groupCount` groups carry one extra layer. Throws INVALID_PROFILE when
 * groupCount is not an integer in [1, layers] (an empty group would have no blocks).
 */
export function layerGroups(p: ModelProfile, groupCount: number): LayerGroup[] {
  if (!Number.isInteger(groupCount) || groupCount < 1 || groupCount > p.layers) {
    throw new KvfError(
      'INVALID_PROFILE',
      `layerGroups: expected an integer in [1, ${p.layers}] for model ${p.id}, got ${groupCount}`,
      { details: { model: p.id, layers: p.layers, groupCount } },
    );
  }
  const base = Math.floor(p.layers / groupCount);
  const extra = p.layers % groupCount;
  const groups: LayerGroup[] = [];
  let firstLayer = 0;
  for (let index = 0; index < groupCount; index++) {
    const layers = base + (index < extra ? 1 : 0);
    groups.push({ index, firstLayer, layers });
    firstLayer += layers;
  }
  return groups;
}

/** Bytes of one block: [layersInGroup, 2, kvHeads, chunkTokens, headDim] in the profile's dtype. */
export function blockBytes(p: ModelProfile, layersInGroup: number): number {
  if (!Number.isInteger(layersInGroup) || layersInGroup < 1 || layersInGroup > p.layers) {
    throw new KvfError(
      'INVALID_PROFILE',
      `blockBytes: layersInGroup must be an integer in [1, ${p.layers}] for model ${p.id}, got ${layersInGroup}`,
      { details: { model: p.id, layers: p.layers, layersInGroup } },
    );
  }
  return layersInGroup * 2 * p.kvHeads * p.chunkTokens * p.headDim * DTYPE_BYTES[p.dtype];
}

/** The largest group's block size: arenas use fixed-size blocks of this size. */
export function maxBlockBytes(p: ModelProfile, groupCount: number): number {
  // Group 0 is always the largest (it gets the extra layer first).
  const largest = layerGroups(p, groupCount)[0];
  if (largest === undefined) throw new Error('unreachable: layerGroups returned no group');
  return blockBytes(p, largest.layers);
}

/** Default chunk size (tokens): vLLM and LMCache use 256-token chunks as well. */
export const DEFAULT_CHUNK_TOKENS = 256;

function builtin(p: ModelProfile): ModelProfile {
  return Object.freeze(validateProfile(p));
}

/** Shapes from each model's published config.json (num_hidden_layers, num_key_value_heads, head_dim). */
export const BUILTIN_PROFILES: Readonly<Record<string, ModelProfile>> = Object.freeze({
  'llama-3-8b': builtin({
    id: 'llama-3-8b',
    layers: 32,
    kvHeads: 8,
    headDim: 128,
    dtype: 'fp16',
    chunkTokens: DEFAULT_CHUNK_TOKENS,
  }),
  'llama-3-70b': builtin({
    id: 'llama-3-70b',
    layers: 80,
    kvHeads: 8,
    headDim: 128,
    dtype: 'fp16',
    chunkTokens: DEFAULT_CHUNK_TOKENS,
  }),
  'qwen2.5-7b': builtin({
    id: 'qwen2.5-7b',
    layers: 28,
    kvHeads: 4,
    headDim: 128,
    dtype: 'bf16',
    chunkTokens: DEFAULT_CHUNK_TOKENS,
  }),
  /** Small enough that tests move real blocks quickly: 2*4*2*16*2 = 512 B/token, 8 KiB/chunk. */
  'tiny-test': builtin({
    id: 'tiny-test',
    layers: 4,
    kvHeads: 2,
    headDim: 16,
    dtype: 'fp16',
    chunkTokens: 16,
  }),
});

/** A built-in profile by id; throws KvfError('UNKNOWN_MODEL') naming the known ids. */
export function getBuiltinProfile(id: string): ModelProfile {
  const p = Object.hasOwn(BUILTIN_PROFILES, id) ? BUILTIN_PROFILES[id] : undefined;
  if (p === undefined) {
    throw new KvfError(
      'UNKNOWN_MODEL',
      `unknown built-in model "${id}"; known: ${Object.keys(BUILTIN_PROFILES).join(', ')}`,
      { details: { model: id } },
    );
  }
  return { ...p };
}
