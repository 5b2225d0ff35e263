import { describe, expect, it } from 'vitest';
import { LatencyWindow, percentile, StatsRecorder } from '../../shared/sdk/stats.js';
import { LeaseReleaser } from '../../shared/sdk/shard-rpc.js';

describe('percentile (nearest rank)', () => {
  it('matches hand-computed values', () => {
    const xs = [15, 20, 35, 40, 50];
    expect(percentile(xs, 30)).toBe(20); // ceil(1.5) = 2nd
    expect(percentile(xs, 40)).toBe(20); // ceil(2) = 2nd
    expect(percentile(xs, 50)).toBe(35);
    expect(percentile(xs, 100)).toBe(50);
    expect(percentile([7], 1)).toBe(7);
    expect(percentile([], 50)).toBeNaN();
    expect(() => percentile(xs, 0)).toThrow(RangeError);
  });

  it('does not depend on input order and returns observed values', () => {
    const xs = Array.from({ length: 1000 }, (_, i) => i + 1);
    const shuffled = [...xs].sort(() => Math.random() - 0.5);
    expect(percentile(shuffled, 50)).toBe(500);
    expect(percentile(shuffled, 95)).toBe(950);
    expect(percentile(shuffled, 99)).toBe(990);
  });
});

describe('LatencyWindow', () => {
  it('keeps only the most recent samplesMax samples', () => {
    const w = new LatencyWindow(4);
    for (const v of [100, 100, 100, 100, 1, 2, 3, 4]) w.record(v);
    const s = w.summary();
    expect(s.samples).toBe(4);
    expect(s.count).toBe(8);
    expect(s.maxMs).toBe(4);
    expect(s.p50Ms).toBe(2);
    expect(s.p99Ms).toBe(4);
    expect(s.meanMs).toBe(2.5);
  });

  it('summarises an empty window as NaN percentiles', () => {
    const s = new LatencyWindow(8).summary();
    expect(s.samples).toBe(0);
    expect(s.p50Ms).toBeNaN();
  });
});

describe('StatsRecorder', () => {
  it('derives hit rates from tokens', () => {
    const r = new StatsRecorder(16);
    expect(r.snapshot().gets.hitRate).toBe(0);
    r.getRequestedTokens = 400;
    r.getHitTokens = 100;
    r.lookupRequestedTokens = 10;
    r.lookupHitTokens = 10;
    const s = r.snapshot();
    expect(s.gets.hitRate).toBe(0.25);
    expect(s.lookups.hitRate).toBe(1);
  });
});

describe('LeaseReleaser', () => {
  it('bounds concurrency and queue length and drains', async () => {
    let inFlight = 0;
    let peak = 0;
    const sent: string[] = [];
    const r = new LeaseReleaser(
      async (node, ids) => {
        inFlight++;
        peak = Math.max(peak, inFlight);
        await new Promise((res) => setTimeout(res, 5));
        sent.push(`${node}:${ids.join(',')}`);
        inFlight--;
        if (node === 'bad') throw new Error('unreachable');
      },
      2,
      5,
    );
    for (let i = 0; i < 8; i++) r.release(i === 3 ? 'bad' : `n${i}`, [`l${i}`]);
    r.release('n9', []); // nothing to release: ignored
    await r.drain(1000);
    expect(peak).toBe(2);
    // 2 start at once, 5 more queue, the 8th is dropped
    expect(sent).toHaveLength(7);
    expect(r.dropped).toBe(1);
  });
});
