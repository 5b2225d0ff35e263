import { describe, expect, it } from 'vitest';
import { transferWindows } from '../../shared/sdk/dataplane.js';

describe('transferWindows', () => {
  const ops = (lens: number[]) => lens.map((length, i) => ({ length, i }));

  it('keeps order and caps bytes per window', () => {
    const w = transferWindows(ops([40, 40, 40, 10, 100, 5]), 80, 64);
    expect(w.map((x) => x.map((o) => o.i))).toEqual([[0, 1], [2, 3], [4], [5]]);
  });

  it('puts an op larger than the cap in a window of its own', () => {
    const w = transferWindows(ops([200, 1, 300]), 100, 64);
    expect(w.map((x) => x.map((o) => o.length))).toEqual([[200], [1], [300]]);
  });

  it('caps ops per window and loses nothing', () => {
    const input = ops(Array.from({ length: 10 }, () => 1));
    const w = transferWindows(input, 1e9, 3);
    expect(w.map((x) => x.length)).toEqual([3, 3, 3, 1]);
    expect(w.flat()).toEqual(input);
    expect(transferWindows([], 10, 10)).toEqual([]);
  });
});
