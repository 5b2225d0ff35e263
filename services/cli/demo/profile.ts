/**
 * The demo's model profile. Real shapes are too big for a demo on a small box: llama-3-8b is
 * 128 KiB of KV per token, 32 MiB per 256-token chunk, so the demo's 8K-token context alone
 * would be 1 GiB per request. `kvf-demo` keeps the real chunk size (256 tokens) and a realistic
 * block layout but a small model: 8 layers x 4 kv heads x 64 dims in fp16 = 8 KiB per token,
 * 2 MiB per chunk, and with the default 4 layer groups 512 KiB per block. The 8K context is then
 * 64 MiB per request, and 100 requests move about 6 GiB through the cluster.
 */
import {
  bytesPerChunk,
  bytesPerToken,
  getBuiltinProfile,
  type ModelProfile,
} from '../../../shared/profiles.js';
import { BUILTIN_PROFILES } from '../../../shared/profiles.js';

export const DEMO_PROFILE: Readonly<ModelProfile> = Object.freeze({
  id: 'kvf-demo',
  layers: 8,
  kvHeads: 4,
  headDim: 64,
  dtype: 'fp16',
  chunkTokens: 256,
});

/** The profile for `--model ID`: the demo profile, or a built-in one. Throws UNKNOWN_MODEL. */
export function demoProfile(id: string = DEMO_PROFILE.id): ModelProfile {
  if (id === DEMO_PROFILE.id) return { ...DEMO_PROFILE };
  return getBuiltinProfile(id);
}

export function isBuiltinModel(id: string): boolean {
  return Object.hasOwn(BUILTIN_PROFILES, id);
}

/** One line describing a profile's shape and sizes. */
export function describeProfile(p: ModelProfile): string {
  const kib = (n: number): string => (n >= 1024 ** 2 ? `${n / 1024 ** 2} MiB` : `${n / 1024} KiB`);
  return `${p.id}: ${p.layers} layers x ${p.kvHeads} kv heads x ${p.headDim} dims ${p.dtype}, ${p.chunkTokens}-token chunks (${kib(bytesPerToken(p))}/token, ${kib(bytesPerChunk(p))}/chunk)`;
}
