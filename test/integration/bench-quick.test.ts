/**
 * `kvfabric bench --quick --json` end to end on a tiny configuration: real nats-server,
 * redis-server, coordinator and 3 shard nodes (UCX), a real Redis-only store, the trace file.
 * Checks the JSON's shape and invariants that must hold on any machine, never speed.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BenchReport } from '../../services/cli/bench/report.js';
import { buildDist } from '../harness/cluster.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const TRACE = path.resolve(ROOT, '..', 'shared', 'traces', 'mooncake_synthetic_trace.jsonl');

describe('kvfabric bench --quick --json (tiny configuration)', () => {
  let out: string;
  let stdout = '';
  let stderr = '';
  let status: number | null = null;
  let report: BenchReport;

  beforeAll(() => {
    buildDist();
    out = mkdtempSync(path.join(os.tmpdir(), 'kvf-bench-'));
    const r = spawnSync(
      process.execPath,
      [
        'bin/kvfabric.js',
        'bench',
        '--quick',
        '--json',
        '--out',
        out,
        '--trace',
        TRACE,
        '--trace-requests',
        '60',
        '--agent-context',
        '512',
        '--agent-requests',
        '3',
        '--measured-fractions',
        '0.1',
        // chat is left out to stay quick on a loaded 2-core host (the same runner serves it).
        'agent',
        'trace',
        'sweep',
        'limits',
      ],
      { cwd: ROOT, encoding: 'utf8', timeout: 400_000, maxBuffer: 64 * 1024 * 1024 },
    );
    stdout = r.stdout;
    stderr = r.stderr;
    status = r.status;
    try {
      report = JSON.parse(stdout) as BenchReport;
    } catch {
      throw new Error(
        `bench printed no JSON (exit ${status}, ${r.error?.message ?? ''}):\n${stderr.slice(-4000)}`,
      );
    }
  }, 420_000);

  afterAll(() => {
    if (out) rmSync(out, { recursive: true, force: true });
  });

  it('exits 0 and prints exactly one JSON object on stdout (tables and progress on stderr)', () => {
    expect(status, stderr.slice(-3000)).toBe(0);
    expect(stdout.trim().split('\n')).toHaveLength(1);
    expect(report.kind).toBe('kvfabric-bench');
    expect(stderr).toContain('Strategies');
  });

  it('has the issue shape: strategies, trace and limits with numbers', () => {
    const names = report.strategies.map((s) => s.name);
    expect(names).toEqual(['no-cache', 'local-lru', 'redis', 'kvfabric']);
    for (const s of report.strategies) {
      for (const k of ['gbps', 'tokensPerSec', 'p50Ms', 'p95Ms', 'p99Ms', 'hitRate'] as const) {
        expect(typeof s[k], `${s.name}.${k}`).toBe('number');
        expect(Number.isFinite(s[k]), `${s.name}.${k}`).toBe(true);
      }
    }
    for (const k of ['idealHitRate', 'hitRate', 'beladyHitRateAtCapacity', 'lruHitRateAtCapacity'] as const) {
      expect(typeof report.trace[k], k).toBe('number');
    }
    expect(report.limits.memcpyGbps).toBeGreaterThan(0);
    expect(report.computeModel.kind).toBe('model');
    expect(report.strategies[0]?.source).toBe('model');
  });

  it('every strategy served the same prefixes of the same prompts, byte-exact', () => {
    for (const w of ['agent', 'trace']) {
      const runs = report.workloads.filter((r) => r.workload === w);
      expect(runs.map((r) => r.strategy)).toEqual(['local-lru', 'redis', 'kvfabric']);
      const hits = new Set(runs.map((r) => r.hitTokens));
      expect(
        hits.size,
        `${w}: ${runs.map((r) => `${r.strategy}=${r.hitTokens} (short puts ${r.putShortfalls}: ${r.lastPutError ?? '-'})`).join(' ')}`,
      ).toBe(1);
      expect(runs[0]!.hitTokens).toBeGreaterThan(0);
      for (const r of runs) {
        expect(r.verifyFailures, `${w}/${r.strategy}`).toBe(0);
        expect(r.verifiedBlocks).toBeGreaterThan(0);
        expect(r.getBytes).toBeGreaterThan(0);
        expect(r.hitRate).toBeLessThanOrEqual(1);
        expect(r.latency.p50Ms).toBeLessThanOrEqual(r.latency.p95Ms);
        expect(r.latency.p95Ms).toBeLessThanOrEqual(r.latency.p99Ms);
      }
    }
    // The agent loop: every follow-up after the first hits the shared 512-token context.
    const agent = report.workloads.find((r) => r.workload === 'agent' && r.strategy === 'kvfabric')!;
    expect(agent.hitTokens).toBeGreaterThanOrEqual(2 * 512);
  });

  it('trace: measured <= infinite, Belady >= LRU, sweep monotone and complete at 100%', () => {
    const t = report.trace;
    expect(t.requestsReplayed).toBe(60); // the trace's first hits come after request 40
    // The strategies' cluster has room for every replayed block: the fabric then hits exactly
    // what an infinite cache hits (same prefixes, nothing evicted).
    expect(t.hitRate!).toBeCloseTo(t.idealHitRate!, 4);
    expect(t.idealHitRate!).toBeGreaterThan(0);
    // A fabric with room for a tenth of the working set hits at most what an infinite cache does.
    expect(t.measured.map((m) => m.fraction)).toEqual([0.1]);
    const tenth = t.measured[0]!;
    expect(tenth.hitRate).toBeLessThanOrEqual(tenth.infinite + 1e-9);
    expect(tenth.infinite).toBeCloseTo(t.idealHitRate!, 4);
    expect(tenth.simBelady).toBeGreaterThanOrEqual(tenth.simLru);
    expect(t.beladyHitRateAtCapacity!).toBeGreaterThanOrEqual(t.lruHitRateAtCapacity!);
    expect(t.sweep.length).toBeGreaterThanOrEqual(5);
    for (let i = 1; i < t.sweep.length; i++) {
      expect(t.sweep[i]!.belady).toBeGreaterThanOrEqual(t.sweep[i - 1]!.belady);
      expect(t.sweep[i]!.belady).toBeGreaterThanOrEqual(t.sweep[i]!.lru);
    }
    const last = t.sweep[t.sweep.length - 1]!;
    expect(last.fraction).toBe(1);
    expect(last.lru).toBe(last.infinite);
    expect(t.fullTrace?.requests).toBeGreaterThan(1000);
  });

  it('writes results.json (same report) and a well-formed SVG chart', () => {
    const saved = JSON.parse(readFileSync(path.join(out, 'results.json'), 'utf8')) as BenchReport;
    expect(saved.strategies).toEqual(report.strategies);
    const svg = readFileSync(path.join(out, 'chart.svg'), 'utf8');
    expect(svg.startsWith('<?xml')).toBe(true);
    expect(svg.trimEnd().endsWith('</svg>')).toBe(true);
    expect(existsSync(path.join(out, 'chart.svg'))).toBe(true);
  });
});
