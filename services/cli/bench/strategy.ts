/**
 * The caching strategies compared by `kvfabric bench`, behind one interface so that every strategy
 * sees the same prompts, the same chunk hashes and the same KV bytes in the same order.
 *
 * A strategy serves the longest cached prefix of a prompt into the worker's buffers (`get`) and
 * stores the KV the worker computed (`put`). Buffers use the SDK layout: one buffer per layer
 * group, chunk-major (shared/sdk/layout.ts).
 */
import type { KvBuffers, ModelLayout } from '../../../shared/sdk/mod.js';

export interface Prompt {
  tokens: Uint32Array;
  /** Chunk hashes of the full chunks (key scheme v1, the fabric's own): keys for every strategy. */
  hashes: readonly string[];
  namespace: string;
}

export interface Strategy {
  readonly name: string;
  readonly layout: ModelLayout;
  /** Fill target with the longest cached prefix; returns the chunks filled. */
  get(p: Prompt, target: KvBuffers): Promise<number>;
  /** Store the prompt's full chunks; chunks before `fromChunk` were just served from this cache. */
  put(p: Prompt, kv: KvBuffers, fromChunk: number): Promise<void>;
  /** Buffers for `chunks` chunks (a get target and put source). */
  allocBuffers(chunks: number): Promise<KvBuffers>;
  /** Puts that stored less than the whole prompt, and why (the last one), when the strategy knows. */
  readonly putShortfalls?: number;
  readonly lastPutError?: string | undefined;
  /** Drop everything cached (between workloads, so each starts cold). */
  clear(): Promise<void>;
  close(): Promise<void>;
}

/** Plain host buffers in the layout (strategies without registered memory). */
export function plainBuffers(layout: ModelLayout, chunks: number): KvBuffers {
  return { groups: layout.blockBytes.map((bb) => Buffer.allocUnsafe(bb * chunks)) };
}

/** The block of chunk i of group g inside buffers. */
export function blockOf(kv: KvBuffers, layout: ModelLayout, g: number, i: number): Uint8Array {
  const bb = layout.blockBytes[g] as number;
  return (kv.groups[g] as Uint8Array).subarray(i * bb, (i + 1) * bb);
}

export function chunkBytes(layout: ModelLayout): number {
  return layout.blockBytes.reduce((a, b) => a + b, 0);
}
