/**
 * `kvfabric bench transfer --json` on a tiny case: two real UCX peer processes over shared memory
 * and tcp, every column of a row filled where it applies (the direct path only over sm). Checks
 * the shape and that every figure is a positive measurement, never speed.
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { buildDist } from '../harness/cluster.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

interface Row {
  op: string;
  transport: string;
  blockBytes: number;
  inflight: number;
  gbps: number;
  arenaGbps: number | null;
  directGbps: number | null;
  perftestGbps: number | null;
  memcpyGbps: number;
}

describe('kvfabric bench transfer --json', () => {
  beforeAll(() => buildDist());

  it('measures alloc, arena and (over sm) direct side by side for every case', () => {
    const r = spawnSync(
      process.execPath,
      [
        'bin/kvfabric.js',
        'bench',
        'transfer',
        '--sizes',
        '4M',
        '--transports',
        'sm,tcp',
        '--inflight',
        '1,4',
        '--bytes-per-case',
        '16M',
        '--no-perftest',
        '--json',
      ],
      { cwd: ROOT, encoding: 'utf8', timeout: 120_000 },
    );
    expect(r.status, r.stderr).toBe(0);
    const { results } = JSON.parse(r.stdout) as { results: Row[] };
    // 2 transports x 2 ops x 2 inflight values.
    expect(results).toHaveLength(8);
    for (const row of results) {
      expect(row.blockBytes).toBe(4 * 1024 * 1024);
      expect(row.gbps).toBeGreaterThan(0);
      expect(row.arenaGbps).toBeGreaterThan(0);
      expect(row.memcpyGbps).toBeGreaterThan(0);
      expect(row.perftestGbps).toBeNull();
      if (row.transport === 'sm') expect(row.directGbps).toBeGreaterThan(0);
      else expect(row.directGbps).toBeNull();
    }
    expect(new Set(results.map((x) => `${x.transport}/${x.op}/${x.inflight}`)).size).toBe(8);
  }, 150_000);
});
