/**
 * The prompts a chaos workload puts and gets, and the bytes of their blocks.
 *
 * Prompts come in families that share a prefix (a system prompt, an agent's context), each with
 * its own tail, so puts of different prompts write the same leading blocks and gets hit partial
 * prefixes. A block's bytes are a pure function of (chunk hash, layer group): the hash names the
 * whole prefix, so every writer of a chunk writes the same bytes (as a real engine would), and a
 * reader can check any block it is served against what the writer wrote without remembering it.
 */
import { crc32cRange } from '../../../native/index.js';
import { chunkHashes } from '../../../shared/hashing.js';
import type { KvBuffers, ModelLayout } from '../../../shared/sdk/mod.js';
import type { Rng } from './rng.js';

export interface Prompt {
  readonly id: number;
  readonly family: number;
  readonly tokens: Uint32Array;
  /** h[0..n-1] of the prompt's full chunks. */
  readonly hashes: readonly string[];
}

export interface CorpusOptions {
  /** Families (shared prefixes). @default 6 */
  families?: number;
  /** Prompts per family. @default 8 */
  promptsPerFamily?: number;
  /** Chunks of each family's shared prefix. @default 3 */
  prefixChunks?: number;
  /** Each prompt's own tail: 1..tailChunksMax chunks. @default 4 */
  tailChunksMax?: number;
  /** Token ids are drawn from [0, vocab). @default 32000 */
  vocab?: number;
}

export const CORPUS_DEFAULTS = {
  families: 6,
  promptsPerFamily: 8,
  prefixChunks: 3,
  tailChunksMax: 4,
  vocab: 32_000,
} as const;

function randomTokens(rng: Rng, n: number, vocab: number): number[] {
  return Array.from({ length: n }, () => rng.int(vocab));
}

export class Corpus {
  readonly prompts: Prompt[] = [];
  private readonly crcCache = new Map<string, number>();

  constructor(
    readonly layout: ModelLayout,
    readonly model: string,
    readonly namespace: string,
    rng: Rng,
    opts: CorpusOptions = {},
  ) {
    const o = { ...CORPUS_DEFAULTS, ...opts };
    const ct = layout.chunkTokens;
    for (let f = 0; f < o.families; f++) {
      const prefix = randomTokens(rng, o.prefixChunks * ct, o.vocab);
      for (let p = 0; p < o.promptsPerFamily; p++) {
        const tail = randomTokens(rng, (1 + rng.int(o.tailChunksMax)) * ct, o.vocab);
        const tokens = Uint32Array.from([...prefix, ...tail]);
        const hashes = chunkHashes(tokens, { modelId: model, namespace, chunkTokens: ct });
        this.prompts.push({ id: this.prompts.length, family: f, tokens, hashes });
      }
    }
  }

  /** Write the block of (hash, g) into `buf` at `offset` (blockBytes[g] bytes). */
  fillBlock(buf: Uint8Array, offset: number, hash: string, g: number): void {
    const len = this.layout.blockBytes[g] as number;
    // xorshift32 seeded by the hash and the group; 4 bytes at a time (block sizes are even).
    let x = (Number.parseInt(hash.slice(0, 8), 16) ^ Math.imul(g + 1, 0x9e3779b9)) >>> 0 || 1;
    const view = new DataView(buf.buffer, buf.byteOffset + offset, len);
    let i = 0;
    for (; i + 4 <= len; i += 4) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      view.setUint32(i, x >>> 0, true);
    }
    for (; i < len; i++) view.setUint8(i, (x >>> (8 * (i & 3))) & 0xff);
  }

  /** crc32c of the block of (hash, g) as its writer computes it. */
  expectedCrc(hash: string, g: number): number {
    const key = `${hash}/${g}`;
    const hit = this.crcCache.get(key);
    if (hit !== undefined) return hit;
    const len = this.layout.blockBytes[g] as number;
    const b = new Uint8Array(len);
    this.fillBlock(b, 0, hash, g);
    const crc = crc32cRange(b, 0, len) >>> 0;
    this.crcCache.set(key, crc);
    return crc;
  }

  /** Fresh put buffers holding the first `chunks` chunks of the prompt. */
  kvFor(prompt: Prompt, chunks = prompt.hashes.length): KvBuffers {
    const groups = this.layout.blockBytes.map((bb, g) => {
      const buf = new Uint8Array(bb * chunks);
      for (let i = 0; i < chunks; i++) this.fillBlock(buf, i * bb, prompt.hashes[i] as string, g);
      return buf;
    });
    return { groups };
  }

  /** Get targets for the whole prompt. */
  targetFor(prompt: Prompt): KvBuffers {
    return { groups: this.layout.blockBytes.map((bb) => new Uint8Array(bb * prompt.hashes.length)) };
  }

  /** Blocks of the first `chunks` chunks in `target` that differ from what the writer wrote. */
  countCorrupt(prompt: Prompt, target: KvBuffers, chunks: number): number {
    let bad = 0;
    for (let i = 0; i < chunks; i++) {
      this.layout.blockBytes.forEach((bb, g) => {
        const got = crc32cRange(target.groups[g] as Uint8Array, i * bb, bb) >>> 0;
        if (got !== this.expectedCrc(prompt.hashes[i] as string, g)) bad++;
      });
    }
    return bad;
  }

  /** Writer-side checksums [chunk][group] of the first `chunks` chunks. */
  checksumsOf(prompt: Prompt, chunks: number): number[][] {
    return Array.from({ length: chunks }, (_, i) =>
      this.layout.blockBytes.map((_bb, g) => this.expectedCrc(prompt.hashes[i] as string, g)),
    );
  }
}
