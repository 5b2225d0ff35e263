import { describe, expect, it } from 'vitest';
import {
  GPU_TFLOPS_DEFAULT,
  loadSeconds,
  MODEL_SHAPES,
  prefillFlops,
  projectTtft,
  recomputeSeconds,
} from '../../services/cli/bench/compute-model.js';
import { gbps, latencyPercentiles, percentile, ratio, round } from '../../services/cli/bench/stats.js';

describe('bench percentiles and rates', () => {
  it('nearest-rank percentiles', () => {
    const xs = Array.from({ length: 100 }, (_, i) => 100 - i); // unsorted 100..1
    expect(percentile(xs, 50)).toBe(50);
    expect(percentile(xs, 95)).toBe(95);
    expect(percentile(xs, 99)).toBe(99);
    expect(percentile(xs, 100)).toBe(100);
    expect(percentile(xs, 0)).toBe(1);
    expect(percentile([3, 1, 2], 50)).toBe(2);
    expect(percentile([7], 99)).toBe(7);
    expect(percentile([], 50)).toBe(0);
    expect(() => percentile([1], 101)).toThrow(RangeError);
  });

  it('latency summary, GB/s, ratios, rounding', () => {
    expect(latencyPercentiles([10, 20, 30, 40])).toEqual({
      samples: 4,
      p50Ms: 20,
      p95Ms: 40,
      p99Ms: 40,
      maxMs: 40,
      meanMs: 25,
    });
    expect(gbps(2e9, 500)).toBe(4);
    expect(gbps(1, 0)).toBe(0);
    expect(ratio(3, 4)).toBe(0.75);
    expect(ratio(3, 0)).toBeNull();
    expect(round(0.0123456)).toBe(0.0123);
    expect(round(123456.7)).toBe(123457);
  });
});

describe('bench compute model (a model, not a measurement)', () => {
  const l8 = MODEL_SHAPES['llama-3-8b']!;
  const l70 = MODEL_SHAPES['llama-3-70b']!;

  it('prefill FLOPs = 2 * params * T + 2 * layers * hidden * T^2', () => {
    expect(prefillFlops(l8, 1000)).toBe(2 * 8.03e9 * 1000 + 2 * 32 * 4096 * 1000 * 1000);
    expect(prefillFlops(l70, 1)).toBe(2 * 70.6e9 + 2 * 80 * 8192);
    // 1000 tokens of Llama-3-8B at 400 TFLOP/s: 1.6322144e13 / 4e14 s.
    expect(recomputeSeconds(l8, 1000, GPU_TFLOPS_DEFAULT)).toBeCloseTo(0.04080536, 8);
    expect(() => recomputeSeconds(l8, 1, 0)).toThrow(RangeError);
  });

  it("load time uses the named model's KV bytes per token (Llama-3-8B: 128 KiB, 8192 tokens = 1 GiB)", () => {
    expect(loadSeconds(l8, 8192, 2 ** 30)).toBe(1);
    expect(loadSeconds(l70, 8192, 2 ** 30)).toBe(2.5); // 80 layers vs 32
    expect(loadSeconds(l8, 1, 0)).toBe(Infinity);
  });

  it('projected TTFT reduction is recompute - load, never negative, labelled model', () => {
    const fast = projectTtft(l8, 'x', 8192, 2 ** 30 * 10, 400); // 100 ms load
    expect(fast.kind).toBe('model');
    expect(fast.loadMs).toBeCloseTo(100, 9);
    const rec = recomputeSeconds(l8, 8192, 400) * 1000;
    expect(fast.recomputeMs).toBeCloseTo(rec, 9);
    expect(fast.ttftReductionMs).toBeCloseTo(rec - 100, 9);
    expect(fast.speedup).toBeCloseTo(rec / 100, 9);
    const slow = projectTtft(l8, 'y', 8192, 2 ** 20, 400);
    expect(slow.ttftReductionMs).toBe(0);
    expect(slow.speedup).toBeLessThan(1);
  });
});
