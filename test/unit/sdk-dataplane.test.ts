import { describe, expect, it } from 'vitest';
import { DIRECT_MIN_OP_BYTES, directPays, transferWindows } from '../../shared/sdk/dataplane.js';

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

describe('directPays', () => {
  const MiB = 1024 * 1024;
  const w = (lens: number[]) => lens.map((length) => ({ length }));

  it('takes the direct path for several ops of DIRECT_MIN_OP_BYTES or more on average', () => {
    expect(DIRECT_MIN_OP_BYTES).toBe(2 * MiB);
    expect(directPays(w([2 * MiB, 2 * MiB]))).toBe(true);
    expect(directPays(w([8 * MiB, 8 * MiB, 8 * MiB]))).toBe(true);
    expect(directPays(w([3 * MiB, 1 * MiB]))).toBe(true);
  });

  it('leaves single ops and small ops to ucp_get/ucp_put', () => {
    expect(directPays(w([64 * MiB]))).toBe(false);
    expect(directPays(w([1 * MiB, 1 * MiB, 1 * MiB]))).toBe(false);
    expect(directPays(w([2 * MiB, 2 * MiB - 2]))).toBe(false);
    expect(directPays([])).toBe(false);
  });
});
