/**
 * Deterministic stand-ins for what a real engine has: prompt tokens from a seeded PRNG, and "KV"
 * whose bytes are a function of (chunk hash, layer group). Real KV is a function of the prefix,
 * and the chunk hash names the whole prefix, so this is the same contract: the demo can check
 * that every byte a get served is exactly what some put stored for that prefix.
 */
import { createHash } from 'node:crypto';

/** mulberry32: tiny, fast, good enough for test data (never for anything secret). */
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

/** Llama-3's vocabulary size: token ids in [0, VOCAB). */
export const VOCAB = 128_000;

/** `n` token ids from a PRNG seeded by `seed`. */
export function tokensFrom(seed: number, n: number): Uint32Array {
  const rng = mulberry32(seed);
  const out = new Uint32Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.floor(rng() * VOCAB);
  return out;
}

/**
 * Fill `out` with the KV bytes of (chunk hash, layer group): an xorshift128 stream seeded from
 * sha256(hash || g). Fast (one 32-bit store per step) because the demo synthesizes and verifies
 * hundreds of MiB.
 */
export function fillBlock(hash: string, g: number, out: Uint8Array): void {
  const seed = createHash('sha256').update(hash).update(`:${g}`).digest();
  let x = seed.readUInt32LE(0) | 1;
  let y = seed.readUInt32LE(4);
  let z = seed.readUInt32LE(8);
  let w = seed.readUInt32LE(12);
  const aligned = out.byteOffset % 4 === 0;
  const target = aligned ? out : new Uint8Array(out.byteLength);
  const words = new Uint32Array(target.buffer, target.byteOffset, target.byteLength >>> 2);
  for (let i = 0; i < words.length; i++) {
    const t = x ^ (x << 11);
    x = y;
    y = z;
    z = w;
    w = (w ^ (w >>> 19) ^ (t ^ (t >>> 8))) >>> 0;
    words[i] = w;
  }
  for (let i = words.length * 4; i < target.byteLength; i++) target[i] = (w >>> (8 * (i % 4))) & 0xff;
  if (!aligned) out.set(target);
}

/**
 * Expected blocks, cached up to `bytesMax`: the shared context's blocks are checked on every
 * request, so generating them once saves most of the verification time.
 */
export class ExpectedBlocks {
  private readonly cache = new Map<string, Buffer>();
  private bytes = 0;

  constructor(private readonly bytesMax: number) {}

  get(hash: string, g: number, blockBytes: number): Buffer {
    const k = `${hash}:${g}`;
    const hit = this.cache.get(k);
    if (hit !== undefined) return hit;
    const b = Buffer.allocUnsafe(blockBytes);
    fillBlock(hash, g, b);
    if (this.bytes + blockBytes <= this.bytesMax) {
      this.cache.set(k, b);
      this.bytes += blockBytes;
    }
    return b;
  }
}
