/**
 * The history checker's definitions on hand-built histories: a lost acknowledged chunk, shared
 * prefix chunks counted once, corrupt blocks from any read, failed operations in the error rate,
 * unacknowledged (failed or partial) puts never counted as lost.
 */
import { describe, expect, it } from 'vitest';
import { acknowledgedPrompts, checkHistory, History } from '../../services/cli/chaos/history.js';
import { parseChaosArgs, parseDurationMs } from '../../services/cli/commands/chaos.js';

const HASHES: Record<number, string[]> = {
  0: ['a0', 'a1', 'p0', 'p1'],
  1: ['a0', 'a1', 'q0'],
};
const hashesOf = (pid: number): string[] => HASHES[pid] ?? [];

function op(h: History, kind: 'put' | 'get' | 'final' | 'probe', pid: number, fields: object): void {
  const r = h.begin(kind, pid, hashesOf(pid).length);
  h.end(r, { ok: true, ...fields });
}

describe('checkHistory', () => {
  it('counts an acknowledged chunk the final re-read does not return as lost, once per hash', () => {
    const h = new History();
    op(h, 'put', 0, { ackChunks: 4 });
    op(h, 'put', 1, { ackChunks: 3 });
    op(h, 'final', 0, { hitChunks: 2, corruptBlocks: 0 }); // p0, p1 missing
    op(h, 'final', 1, { hitChunks: 3, corruptBlocks: 0 });
    const v = checkHistory(h, hashesOf);
    expect(v.acknowledgedChunks).toBe(5); // a0 a1 p0 p1 q0
    expect(v.acknowledgedLost).toBe(2);
    expect(acknowledgedPrompts(h)).toEqual(
      new Map([
        [0, 4],
        [1, 3],
      ]),
    );
  });

  it('a chunk readable through another prompt sharing its prefix is not lost', () => {
    const h = new History();
    op(h, 'put', 1, { ackChunks: 2 });
    op(h, 'final', 1, { hitChunks: 0 });
    op(h, 'final', 0, { hitChunks: 2 });
    expect(checkHistory(h, hashesOf).acknowledgedLost).toBe(0);
  });

  it('failed and unacknowledged puts are never lost; failures count in the error rate', () => {
    const h = new History();
    const r = h.begin('put', 0, 4);
    h.end(r, { ok: false, error: 'TIMEOUT' });
    op(h, 'put', 1, { ackChunks: 0 });
    op(h, 'get', 1, { hitChunks: 0, corruptBlocks: 0 });
    op(h, 'get', 0, { hitChunks: 1, corruptBlocks: 1 });
    op(h, 'probe', 0, { hitChunks: 1, corruptBlocks: 2 });
    const v = checkHistory(h, hashesOf);
    expect(v.acknowledgedLost).toBe(0);
    expect(v.ops).toBe(4); // probes and final reads are measurements
    expect(v.failedOps).toBe(1);
    expect(v.errorRate).toBeCloseTo(0.25);
    expect(v.corruptServed).toBe(3);
  });
});

describe('kvfabric chaos arguments', () => {
  it('parses scenarios, durations and numbers and rejects the rest', () => {
    expect(parseDurationMs('10m')).toBe(600_000);
    expect(parseDurationMs('90s')).toBe(90_000);
    expect(parseDurationMs('250ms')).toBe(250);
    expect(parseDurationMs('ten')).toBeUndefined();
    const a = parseChaosArgs([
      '--scenario',
      'kill-shard,kill-redis',
      '--duration',
      '2m',
      '--json',
      '--seed',
      '5',
    ]);
    expect(a).toMatchObject({
      scenarios: ['kill-shard', 'kill-redis'],
      durationMs: 120_000,
      json: true,
      seed: 5,
    });
    expect(parseChaosArgs(['--scenario', 'nope'])).toMatch(/unknown scenario/);
    expect(parseChaosArgs(['--shards', '3'])).toMatch(/at least 4/);
    expect((parseChaosArgs([]) as { scenarios: string[] }).scenarios).toHaveLength(9);
  });
});
