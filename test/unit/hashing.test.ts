import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { isKvfError } from '../../shared/errors.js';
import {
  chunkHashes,
  chunkHashesRaw,
  fullChunks,
  KEY_SCHEME_TAG,
  KEY_SCHEME_VERSION,
  seedHash,
} from '../../shared/hashing.js';

interface Vector {
  name: string;
  modelId: string;
  namespace: string;
  chunkTokens: number;
  tokens: number[];
  seed: string;
  hashes: string[];
}

const fixture = JSON.parse(readFileSync(new URL('./fixtures/key-vectors.json', import.meta.url), 'utf8')) as {
  keySchemeVersion: number;
  vectors: Vector[];
};

/**
 * A second, deliberately naive implementation of the v1 spec, written from docs/keys.md: bytes
 * assembled one at a time into a plain array, no Buffer tricks, no typed-array views. If the
 * production code and this disagree, one of them misreads the spec.
 */
function naiveU32le(n: number): number[] {
  return [n % 256, Math.floor(n / 256) % 256, Math.floor(n / 65536) % 256, Math.floor(n / 16777216) % 256];
}
function naiveSha256(bytes: number[]): number[] {
  return [...createHash('sha256').update(Uint8Array.from(bytes)).digest()];
}
function naiveChunkHashes(
  tokens: number[],
  modelId: string,
  namespace: string,
  chunkTokens: number,
): string[] {
  const tag = [...'kvfabric/keys/v1'].map((c) => c.charCodeAt(0));
  const model = [...new TextEncoder().encode(modelId)];
  const ns = [...new TextEncoder().encode(namespace)];
  let prev = naiveSha256([...tag, ...naiveU32le(model.length), ...model, ...naiveU32le(ns.length), ...ns]);
  const out: string[] = [];
  for (let start = 0; start + chunkTokens <= tokens.length; start += chunkTokens) {
    const bytes = [...prev];
    for (const t of tokens.slice(start, start + chunkTokens)) bytes.push(...naiveU32le(t));
    prev = naiveSha256(bytes);
    out.push(prev.map((b) => b.toString(16).padStart(2, '0')).join(''));
  }
  return out;
}

/** Seeded PRNG (mulberry32) so a failure names the seed that reproduces it. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const SEED = Number(process.env.KVFABRIC_TEST_SEED ?? Date.now() % 2 ** 31);
const rand = mulberry32(SEED);
const randTokens = (n: number): number[] => Array.from({ length: n }, () => Math.floor(rand() * 2 ** 32));
const opts = { modelId: 'llama-3-8b', namespace: 'default', chunkTokens: 16 };

describe('key scheme v1: golden vectors', () => {
  it('the fixture is for this scheme version and covers the interesting cases', () => {
    expect(KEY_SCHEME_VERSION).toBe(1);
    expect(KEY_SCHEME_TAG).toBe('kvfabric/keys/v1');
    expect(fixture.keySchemeVersion).toBe(KEY_SCHEME_VERSION);
    expect(fixture.vectors.length).toBeGreaterThanOrEqual(6);
    expect(fixture.vectors.some((v) => v.hashes.length === 0)).toBe(true);
    expect(fixture.vectors.some((v) => v.tokens.length % v.chunkTokens !== 0)).toBe(true);
  });

  for (const v of fixture.vectors) {
    it(`matches the checked-in vector: ${v.name}`, () => {
      expect(seedHash(v.modelId, v.namespace).toString('hex')).toBe(v.seed);
      expect(chunkHashes(v.tokens, v)).toEqual(v.hashes);
      expect(chunkHashes(Uint32Array.from(v.tokens), v)).toEqual(v.hashes);
    });

    it(`an independent naive implementation agrees: ${v.name}`, () => {
      const naive = naiveChunkHashes(v.tokens, v.modelId, v.namespace, v.chunkTokens);
      expect(naive).toEqual(v.hashes);
    });
  }

  it('docs/keys.md lists every vector output', () => {
    const doc = readFileSync(new URL('../../docs/keys.md', import.meta.url), 'utf8');
    for (const v of fixture.vectors) {
      expect(doc, v.name).toContain(v.seed);
      for (const h of v.hashes) expect(doc, v.name).toContain(h);
    }
  });

  it(`the naive implementation agrees on random prompts (seed ${SEED})`, () => {
    for (let k = 0; k < 20; k++) {
      const tokens = randTokens(Math.floor(rand() * 100));
      const chunkTokens = 1 + Math.floor(rand() * 9);
      const o = { modelId: `m${k}`, namespace: `ns-${k % 3}`, chunkTokens };
      expect(chunkHashes(tokens, o), `seed ${SEED}`).toEqual(
        naiveChunkHashes(tokens, o.modelId, o.namespace, chunkTokens),
      );
    }
  });
});

describe('chunk hash properties', () => {
  it(`a prompt's hashes are a prefix of any longer prompt's hashes (seed ${SEED})`, () => {
    const long = randTokens(16 * 20 + 7);
    const all = chunkHashes(long, opts);
    expect(all).toHaveLength(20);
    for (let len = 0; len <= long.length; len += 5) {
      const short = chunkHashes(long.slice(0, len), opts);
      expect(short, `len ${len}, seed ${SEED}`).toEqual(all.slice(0, Math.floor(len / 16)));
    }
  });

  it(`a changed token changes its chunk's hash and every later one, and no earlier one (seed ${SEED})`, () => {
    const tokens = randTokens(16 * 10);
    const base = chunkHashes(tokens, opts);
    for (const pos of [0, 15, 16, 77, 159]) {
      const changed = tokens.slice();
      changed[pos] = ((changed[pos] as number) + 1) % 2 ** 32;
      const after = chunkHashes(changed, opts);
      const chunk = Math.floor(pos / 16);
      for (let i = 0; i < base.length; i++) {
        if (i < chunk) expect(after[i], `pos ${pos} chunk ${i}`).toBe(base[i]);
        else expect(after[i], `pos ${pos} chunk ${i}`).not.toBe(base[i]);
      }
    }
  });

  it(`two namespaces never share a hash, nor two models (seed ${SEED})`, () => {
    const seen = new Map<string, string>();
    const tokens = randTokens(16 * 50);
    for (const modelId of ['llama-3-8b', 'llama-3-70b']) {
      for (const namespace of ['default', 'tenant-a', 'tenant-b', '']) {
        for (const h of chunkHashes(tokens, { modelId, namespace, chunkTokens: 16 })) {
          const owner = `${modelId}/${namespace}`;
          expect(seen.get(h), `hash shared by ${seen.get(h)} and ${owner}`).toBeUndefined();
          seen.set(h, owner);
        }
      }
    }
    expect(seen.size).toBe(2 * 4 * 50);
  });

  it('the seed is length-prefixed: ("ab","c") and ("a","bc") differ', () => {
    expect(seedHash('ab', 'c').equals(seedHash('a', 'bc'))).toBe(false);
    expect(seedHash('a', '').equals(seedHash('', 'a'))).toBe(false);
  });

  it('the partial last chunk is not hashed', () => {
    const tokens = randTokens(16 * 3);
    const full = chunkHashes(tokens, opts);
    expect(full).toHaveLength(3);
    for (let extra = 1; extra < 16; extra++) {
      expect(chunkHashes([...tokens, ...randTokens(extra)], opts)).toEqual(full);
    }
    expect(chunkHashes(tokens.slice(0, 15), opts)).toEqual([]);
    expect(chunkHashes([], opts)).toEqual([]);
  });

  it('raw and hex forms agree; the hex form is 64 lowercase chars', () => {
    const tokens = randTokens(40);
    const raw = chunkHashesRaw(tokens, opts);
    const hex = chunkHashes(tokens, opts);
    expect(raw.map((b) => b.toString('hex'))).toEqual(hex);
    for (const h of hex) expect(h).toMatch(/^[0-9a-f]{64}$/);
  });

  it('typed-array views with an offset hash the same as plain arrays', () => {
    const tokens = randTokens(50);
    const backing = new Uint32Array(60);
    backing.set(tokens, 7);
    const view = backing.subarray(7, 57);
    expect(chunkHashes(view, opts)).toEqual(chunkHashes(tokens, opts));
    expect(chunkHashes(Float64Array.from(tokens), opts)).toEqual(chunkHashes(tokens, opts));
  });
});

describe('validation', () => {
  const expectBadRequest = (fn: () => unknown): void => {
    let caught: unknown;
    try {
      fn();
    } catch (err) {
      caught = err;
    }
    expect(isKvfError(caught, 'BAD_REQUEST'), String(caught)).toBe(true);
  };

  it('rejects token ids that are not u32 integers, also in the unhashed tail', () => {
    for (const bad of [-1, 2 ** 32, 1.5, Number.NaN, Infinity]) {
      expectBadRequest(() => chunkHashes([1, 2, bad, 4], { ...opts, chunkTokens: 2 }));
      expectBadRequest(() => chunkHashes([1, 2, 3, 4, bad], { ...opts, chunkTokens: 2 }));
    }
    expectBadRequest(() => chunkHashes(['7' as unknown as number, 1], { ...opts, chunkTokens: 1 }));
    expectBadRequest(() => chunkHashes(Int32Array.from([1, -5]), { ...opts, chunkTokens: 2 }));
    expect(() => chunkHashes([0, 2 ** 32 - 1], { ...opts, chunkTokens: 2 })).not.toThrow();
  });

  it('names the offending index', () => {
    expect(() => chunkHashes([1, 2, 3, -9], opts)).toThrow(/tokens\[3\]/);
  });

  it('rejects a chunk size that is not a positive integer', () => {
    for (const chunkTokens of [0, -4, 2.5, Number.NaN]) {
      expectBadRequest(() => chunkHashes([1, 2, 3], { ...opts, chunkTokens }));
      expectBadRequest(() => fullChunks(10, chunkTokens));
    }
  });

  it('fullChunks counts only full chunks', () => {
    expect(fullChunks(0, 256)).toBe(0);
    expect(fullChunks(255, 256)).toBe(0);
    expect(fullChunks(256, 256)).toBe(1);
    expect(fullChunks(1000, 256)).toBe(3);
    expectBadRequest(() => fullChunks(-1, 256));
  });
});
