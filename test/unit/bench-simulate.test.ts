import { describe, expect, it } from 'vitest';
import {
  capacitySweep,
  nextUses,
  simulateBelady,
  simulateInfinite,
  simulateLru,
  workingSetBlocks,
} from '../../services/cli/bench/simulate.js';

// Hand-computed cases; each comment walks the state (LRU order: first = next victim).
describe('bench cache simulators', () => {
  const cyclic = [[1], [2], [3], [1], [2], [3]];

  it('infinite: a block hits on every reuse', () => {
    expect(simulateInfinite(cyclic)).toEqual({ hitBlocks: 3, totalBlocks: 6, hitRate: 0.5 });
    expect(workingSetBlocks(cyclic)).toBe(3);
  });

  it('LRU thrashes on a cycle one larger than the store', () => {
    // cap 2: {1} {1,2} {2,3} {3,1} {1,2} {2,3}: never a hit.
    expect(simulateLru(cyclic, 2).hitBlocks).toBe(0);
  });

  it('Belady keeps the blocks used soonest and skips storing the furthest', () => {
    // next uses by position: [3,4,5,inf,inf,inf]. Block 3 (next use 5) arrives with 1 (3) and 2 (4)
    // held: it is the furthest, so it is not stored; 1 and 2 then hit.
    expect([...nextUses(cyclic)]).toEqual([3, 4, 5, Infinity, Infinity, Infinity]);
    expect(simulateBelady(cyclic, 2).hitBlocks).toBe(2);
  });

  it('prefix semantics: a hit is the leading run of present blocks', () => {
    const seqs = [
      [1, 2, 3],
      [1, 2, 4],
      [1, 2, 3],
    ];
    // LRU cap 3: r1 stores 1,2,3 (order 3,2,1). r2 hits 1,2; storing 4 evicts 3 (the tail);
    // r3 hits 1,2 then misses 3: 0 + 2 + 2.
    expect(simulateLru(seqs, 3)).toMatchObject({ hitBlocks: 4, totalBlocks: 9 });
    // Belady cap 3: 4 is never used again, so it is not stored and r3 hits all three: 0 + 2 + 3.
    expect(simulateBelady(seqs, 3)).toMatchObject({ hitBlocks: 5, totalBlocks: 9 });
    expect(simulateInfinite(seqs).hitBlocks).toBe(5);
  });

  it("LRU evicts a prompt's later chunk before its earlier one (prefix-closed, as the shard node)", () => {
    // cap 2: r1 commits 1,2 touched later-first: order [2,1]. r2 stores 3 evicting 2 (not 1).
    // r3 then hits block 1. A plain LRU touching 1 then 2 would evict 1 and r3 would miss.
    expect(simulateLru([[1, 2], [3], [1, 2]], 2).hitBlocks).toBe(1);
  });

  it('a get touches the hit blocks', () => {
    // cap 2: r1 stores 1 ([1]); r2 stores 2 ([1,2]); r3 hits 1 (touch: [2,1]); r4 stores 3 evicting 2;
    // r5 hits 1.
    expect(simulateLru([[1], [2], [1], [3], [1]], 2).hitBlocks).toBe(2);
    // Without r3's touch, r4 would evict 1 and r5 would miss: check the variant.
    expect(simulateLru([[1], [2], [3], [1]], 2).hitBlocks).toBe(0);
  });

  it('rejects a capacity below one block', () => {
    expect(() => simulateLru(cyclic, 0)).toThrow(RangeError);
    expect(() => simulateBelady(cyclic, 0)).toThrow(RangeError);
  });

  it('sweep: Belady >= LRU, both <= infinite, monotone in capacity, equal to infinite at 100%', () => {
    // A seeded mix of shared prefixes and one-off prompts.
    let x = 12345;
    const rnd = (n: number): number => {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      return x % n;
    };
    const seqs: number[][] = [];
    let fresh = 1000;
    for (let r = 0; r < 300; r++) {
      const base = rnd(5);
      const shared = Array.from({ length: 1 + rnd(6) }, (_, i) => base * 100 + i);
      seqs.push([...shared, ...Array.from({ length: rnd(4) }, () => fresh++)]);
    }
    const sw = capacitySweep(seqs, [0.05, 0.1, 0.3, 1]);
    let prevL = 0;
    let prevB = 0;
    for (const p of sw.points) {
      expect(p.belady).toBeGreaterThanOrEqual(p.lru);
      expect(p.infinite).toBeGreaterThanOrEqual(p.belady);
      expect(p.lru).toBeGreaterThanOrEqual(prevL);
      expect(p.belady).toBeGreaterThanOrEqual(prevB);
      prevL = p.lru;
      prevB = p.belady;
    }
    const last = sw.points[sw.points.length - 1]!;
    expect(last.lru).toBe(sw.infinite.hitRate);
    expect(last.belady).toBe(sw.infinite.hitRate);
    expect(sw.points[0]!.capacityBlocks).toBe(Math.ceil(0.05 * sw.workingSetBlocks));
  });
});
