import { describe, expect, it } from 'vitest';
import { isKvfError } from '../../shared/errors.js';
import { chunkHashes } from '../../shared/hashing.js';
import {
  allCells,
  cellFor,
  cellId,
  groupChunksByCell,
  type PartitionSpec,
  parseCellId,
  rotation,
  seqBucketOf,
  validatePartitionSpec,
} from '../../shared/partition.js';

/** Seeded PRNG (mulberry32); every randomized assertion names the seed that reproduces it. */
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

const H = (prefix8: string): string => prefix8 + '0'.repeat(56);
const spec: PartitionSpec = { layerGroups: 4, seqBuckets: 8, seqBucketTokens: 64 };
const CHUNK = 16;

function thrownCode(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    return isKvfError(err) ? err.codeName : `non-KvfError: ${String(err)}`;
  }
  return 'nothing thrown';
}

/** 10,000 random prompts (random tokens, random lengths up to 128 chunks), hashed for real. */
function randomPrompts(seed: number, count: number, maxTokens: number): string[][] {
  const rand = mulberry32(seed);
  const prompts: string[][] = [];
  for (let k = 0; k < count; k++) {
    const len = CHUNK + Math.floor(rand() * maxTokens);
    const tokens = new Uint32Array(len);
    for (let i = 0; i < len; i++) tokens[i] = Math.floor(rand() * 128256);
    prompts.push(chunkHashes(tokens, { modelId: 'tiny-test', namespace: 'default', chunkTokens: CHUNK }));
  }
  return prompts;
}

describe('validatePartitionSpec', () => {
  it('accepts a valid spec', () => {
    expect(validatePartitionSpec({ layerGroups: 4, seqBuckets: 8, seqBucketTokens: 4096 })).toEqual({
      layerGroups: 4,
      seqBuckets: 8,
      seqBucketTokens: 4096,
    });
  });

  it('rejects bad values with CONFIG_INVALID naming the key', () => {
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ layerGroups: 0 }, /layerGroups/],
      [{ seqBuckets: -1 }, /seqBuckets/],
      [{ seqBuckets: 1.5 }, /seqBuckets/],
      [{ seqBucketTokens: 0 }, /seqBucketTokens/],
      [{ seqBucketTokens: '4096' }, /seqBucketTokens/],
      [{ seqBuckets: 5000 }, /seqBuckets.*4096/],
      [{ extra: 1 }, /extra: unknown field/],
    ];
    for (const [patch, re] of cases) {
      try {
        validatePartitionSpec({ ...spec, ...patch });
        expect.unreachable(`accepted ${JSON.stringify(patch)}`);
      } catch (err) {
        expect(isKvfError(err, 'CONFIG_INVALID'), String(err)).toBe(true);
        expect((err as Error).message).toMatch(re);
      }
    }
    expect(thrownCode(() => validatePartitionSpec(null))).toBe('CONFIG_INVALID');
  });
});

describe('cells', () => {
  it('cellId and parseCellId round-trip', () => {
    for (const c of allCells({ layerGroups: 12, seqBuckets: 11, seqBucketTokens: 1 })) {
      expect(parseCellId(cellId(c))).toEqual(c);
    }
    expect(cellId({ g: 3, s: 10 })).toBe('3.10');
  });

  it('parseCellId rejects what cellId never produces', () => {
    for (const bad of ['', '1', '1.2.3', '-1.0', '01.2', 'a.b', '1.', '.1', ' 1.2']) {
      expect(
        thrownCode(() => parseCellId(bad)),
        bad,
      ).toBe('BAD_REQUEST');
    }
  });

  it('allCells lists G x S distinct cells, group-major', () => {
    const cells = allCells(spec);
    expect(cells).toHaveLength(32);
    expect(new Set(cells.map(cellId)).size).toBe(32);
    expect(cells.slice(0, 3)).toEqual([
      { g: 0, s: 0 },
      { g: 0, s: 1 },
      { g: 0, s: 2 },
    ]);
  });
});

describe('rotation and sequence buckets', () => {
  it('rotation reads the first 4 bytes of h[0] big-endian', () => {
    expect(rotation(H('00000001'), 16)).toBe(1);
    expect(rotation(H('01000000'), 10)).toBe(16777216 % 10); // 6; little-endian would give 1
    expect(rotation(H('ffffffff'), 7)).toBe(4294967295 % 7);
    expect(rotation(H('0000000b'), 1)).toBe(0);
  });

  it('rejects malformed hashes and bucket counts', () => {
    expect(thrownCode(() => rotation('abc', 8))).toBe('BAD_REQUEST');
    expect(thrownCode(() => rotation(H('0000000A'), 8))).toBe('BAD_REQUEST');
    expect(thrownCode(() => rotation(H('00000000'), 0))).toBe('BAD_REQUEST');
  });

  it('is the window index plus the rotation, mod S (hand-computed)', () => {
    const h0 = H('00000005'); // rotation 5 with S = 8
    // Windows of 64 tokens hold 4 chunks of 16: chunks 0-3 -> window 0, 4-7 -> 1, ...
    const got = Array.from({ length: 40 }, (_, i) => seqBucketOf(spec, i, CHUNK, h0));
    const want = Array.from({ length: 40 }, (_, i) => (Math.floor(i / 4) + 5) % 8);
    expect(got).toEqual(want);
    expect(got.slice(0, 4)).toEqual([5, 5, 5, 5]);
    expect(got.slice(12, 16)).toEqual([0, 0, 0, 0]); // wrapped
  });

  it('a chunk belongs to the window its first token falls in when windows do not divide evenly', () => {
    const odd: PartitionSpec = { layerGroups: 1, seqBuckets: 100, seqBucketTokens: 40 };
    const buckets = Array.from({ length: 6 }, (_, i) => seqBucketOf(odd, i, CHUNK, H('00000000')));
    // first tokens 0,16,32 | 48,64 | 80 -> windows 0,0,0,1,1,2
    expect(buckets).toEqual([0, 0, 0, 1, 1, 2]);
  });

  it('cellFor puts the layer group in g and the sequence bucket in s', () => {
    const h0 = H('00000003');
    expect(cellFor(spec, { chunkIndex: 9, chunkTokens: CHUNK, firstChunkHash: h0, layerGroup: 2 })).toEqual({
      g: 2,
      s: (2 + 3) % 8,
    });
    expect(
      thrownCode(() =>
        cellFor(spec, { chunkIndex: 0, chunkTokens: CHUNK, firstChunkHash: h0, layerGroup: 4 }),
      ),
    ).toBe('BAD_REQUEST');
    expect(
      thrownCode(() =>
        cellFor(spec, { chunkIndex: -1, chunkTokens: CHUNK, firstChunkHash: h0, layerGroup: 0 }),
      ),
    ).toBe('BAD_REQUEST');
  });

  it(`is deterministic (seed ${SEED})`, () => {
    const [a, b] = [randomPrompts(SEED, 50, 1024), randomPrompts(SEED, 50, 1024)];
    expect(a).toEqual(b);
    for (const hashes of a)
      expect(groupChunksByCell(spec, hashes, CHUNK)).toEqual(groupChunksByCell(spec, hashes, CHUNK));
  });

  it(`consecutive chunks of one prompt stay in one bucket within a window (seed ${SEED})`, () => {
    for (const hashes of randomPrompts(SEED, 200, 2048)) {
      const h0 = hashes[0] as string;
      for (let i = 1; i < hashes.length; i++) {
        const [prev, cur] = [seqBucketOf(spec, i - 1, CHUNK, h0), seqBucketOf(spec, i, CHUNK, h0)];
        const sameWindow = Math.floor((i * CHUNK) / 64) === Math.floor(((i - 1) * CHUNK) / 64);
        expect(cur, `chunk ${i}, seed ${SEED}`).toBe(sameWindow ? prev : (prev + 1) % 8);
      }
    }
  });
});

describe('groupChunksByCell', () => {
  it('covers every chunk once per layer group, in the cell cellFor names', () => {
    const hashes = randomPrompts(SEED, 1, 16 * 40)[0] as string[];
    const groups = groupChunksByCell(spec, hashes, CHUNK);
    expect(groups).toHaveLength(spec.layerGroups);
    for (const [g, byCell] of groups.entries()) {
      const seen: number[] = [];
      for (const [id, indices] of byCell) {
        expect(parseCellId(id).g).toBe(g);
        expect(indices).toEqual([...indices].sort((x, y) => x - y));
        for (const i of indices) {
          const c = cellFor(spec, {
            chunkIndex: i,
            chunkTokens: CHUNK,
            firstChunkHash: hashes[0] as string,
            layerGroup: g,
          });
          expect(cellId(c), `seed ${SEED}`).toBe(id);
          seen.push(i);
        }
      }
      expect(seen.sort((x, y) => x - y)).toEqual(hashes.map((_, i) => i));
    }
  });

  it('batches: a 4-window prompt touches 4 cells per group, not one per chunk', () => {
    const hashes = Array.from({ length: 16 }, () => H('00000000'));
    const groups = groupChunksByCell(spec, hashes, CHUNK);
    expect([...(groups[0] as Map<string, number[]>).keys()]).toEqual(['0.0', '0.1', '0.2', '0.3']);
    expect((groups[3] as Map<string, number[]>).get('3.1')).toEqual([4, 5, 6, 7]);
  });

  it('an empty prompt gives empty maps', () => {
    const groups = groupChunksByCell(spec, [], CHUNK);
    expect(groups).toHaveLength(4);
    for (const m of groups) expect(m.size).toBe(0);
  });
});

describe('load balance over 10,000 random prompts', () => {
  const PROMPTS = 10_000;
  const prompts = randomPrompts(SEED, PROMPTS, 2048); // 1..128 chunks each

  it(`the most loaded cell carries at most 1.5x the mean (seed ${SEED})`, () => {
    const blocks = new Map<string, number>(allCells(spec).map((c) => [cellId(c), 0]));
    let total = 0;
    for (const hashes of prompts) {
      for (const byCell of groupChunksByCell(spec, hashes, CHUNK)) {
        for (const [id, indices] of byCell) {
          blocks.set(id, (blocks.get(id) ?? Number.NaN) + indices.length);
          total += indices.length;
        }
      }
    }
    expect(blocks.size).toBe(32); // no cell outside the spec
    expect(total).toBe(spec.layerGroups * prompts.reduce((n, h) => n + h.length, 0));
    const mean = total / blocks.size;
    const max = Math.max(...blocks.values());
    expect(max / mean, `max ${max}, mean ${mean.toFixed(1)}, seed ${SEED}`).toBeLessThanOrEqual(1.5);
  });

  it(`the first chunks of different prompts spread over the sequence buckets (seed ${SEED})`, () => {
    const S = 16;
    const wide: PartitionSpec = { layerGroups: 1, seqBuckets: S, seqBucketTokens: 256 };
    const counts = new Array<number>(S).fill(0);
    for (const hashes of prompts) {
      const b = seqBucketOf(wide, 0, CHUNK, hashes[0] as string);
      counts[b] = (counts[b] as number) + 1;
    }
    const expected = PROMPTS / S;
    const chiSquare = counts.reduce((acc, c) => acc + (c - expected) ** 2 / expected, 0);
    const detail = `counts ${counts.join(',')}, chi2 ${chiSquare.toFixed(1)}, seed ${SEED}`;
    // 15 degrees of freedom: P(chi2 > 60) is about 1e-7 for a uniform spread; without the
    // rotation every first chunk lands in bucket 0 and chi2 is 150,000.
    expect(chiSquare, detail).toBeLessThan(60);
    expect(Math.max(...counts) / expected, detail).toBeLessThan(1.25);
    expect(Math.min(...counts) / expected, detail).toBeGreaterThan(0.75);
  });
});
