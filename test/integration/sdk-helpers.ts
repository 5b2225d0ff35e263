/**
 * Helpers for the SDK integration tests: deterministic "KV" whose bytes are a function of the
 * chunk's hash (as real KV is a function of the prefix), prompts with shared prefixes from a
 * seeded PRNG (the seed is printed on failure), and byte-exact comparison of served prefixes.
 */
import { expect } from 'vitest';
import { chunkHashes } from '../../shared/hashing.js';
import type { KvBuffers, ModelLayout } from '../../shared/sdk/mod.js';

export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function randomTokens(rng: () => number, n: number): number[] {
  return Array.from({ length: n }, () => Math.floor(rng() * 128_000));
}

/** The block of (chunk hash, group): bytes from a PRNG seeded by the hash and the group. */
export function blockContent(hash: string, g: number, bytes: number): Uint8Array {
  const rng = mulberry32(Number.parseInt(hash.slice(0, 8), 16) ^ Math.imul(g + 1, 0x9e3779b1));
  const out = new Uint8Array(bytes);
  const words = new Uint32Array(out.buffer);
  for (let k = 0; k < words.length; k++) words[k] = Math.floor(rng() * 4294967296);
  return out;
}

export interface PromptKv {
  hashes: string[];
  kv: KvBuffers;
}

/** The KV a worker would hold for `tokens` (full chunks only), chunk-major per group. */
export function kvFor(tokens: readonly number[], layout: ModelLayout, namespace: string): PromptKv {
  const hashes = chunkHashes(tokens, {
    modelId: layout.profile.id,
    namespace,
    chunkTokens: layout.chunkTokens,
  });
  const groups = layout.blockBytes.map((bb, g) => {
    const buf = new Uint8Array(bb * hashes.length);
    hashes.forEach((h, i) => buf.set(blockContent(h, g, bb), i * bb));
    return buf;
  });
  return { hashes, kv: { groups } };
}

/** The first `chunks` chunks of every group of `target` equal the expected KV, byte for byte. */
export function expectServed(
  target: KvBuffers,
  expected: PromptKv,
  layout: ModelLayout,
  chunks: number,
): void {
  layout.blockBytes.forEach((bb, g) => {
    const got = Buffer.from(target.groups[g]!.subarray(0, chunks * bb));
    const want = Buffer.from(expected.kv.groups[g]!.subarray(0, chunks * bb));
    expect(got.equals(want), `group ${g}, first ${chunks} chunks`).toBe(true);
  });
}

/** Fill a target with a pattern, so that stale bytes from an earlier get cannot pass as served. */
export function scribble(target: KvBuffers, byte = 0xa5): void {
  for (const b of target.groups) b.fill(byte);
}
