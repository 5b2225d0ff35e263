/**
 * `kvfabric up` and `kvfabric status` as users run them (`node bin/kvfabric.js ...` on the compiled
 * dist/), each in its own temp working directory so the state file is the test's own:
 * - `up --shards 3 --demo --once`: the demo runs, serves every cached byte exactly, exits 0;
 * - `up --shards 2` keeps running: `status --json` sees its members, placement and epoch, and
 *   counts stranded bytes once an index entry of an early chunk is deleted; SIGTERM stops it with
 *   exit 0 and leaves none of its processes behind.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ClusterState } from '../../services/cli/commands/cluster-state.js';
import { chunkHashes } from '../../shared/hashing.js';
import { BUILTIN_PROFILES } from '../../shared/profiles.js';
import { connect } from '../../shared/sdk/mod.js';
import { buildDist, waitFor } from '../harness/cluster.js';
import { kvFor, mulberry32, randomTokens } from './sdk-helpers.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const bin = path.join(repo, 'bin/kvfabric.js');
const dirs: string[] = [];

function tempCwd(): string {
  const d = mkdtempSync(path.join(os.tmpdir(), 'kvf-up-'));
  dirs.push(d);
  return d;
}

/** The environment without KVFABRIC_* variables, so the developer's shell cannot change results. */
function cleanEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('KVFABRIC_')));
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

interface Run {
  child: ChildProcess;
  out: () => string;
  exited: Promise<number | null>;
}

function startUp(args: string[], cwd: string): Run {
  const child = spawn(process.execPath, [bin, 'up', ...args], {
    cwd,
    env: cleanEnv(),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout?.setEncoding('utf8').on('data', (c: string) => (out += c));
  child.stderr?.setEncoding('utf8').on('data', (c: string) => (out += c));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, out: () => out, exited };
}

function status(cwd: string, args: string[] = []): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [bin, 'status', ...args], {
    cwd,
    env: cleanEnv(),
    encoding: 'utf8',
    timeout: 60_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

beforeAll(() => buildDist());
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('kvfabric up --demo --once', () => {
  it('runs the agent-loop demo on 3 shard nodes, hits the cache, verifies every byte, exits 0', async () => {
    const run = startUp(['--shards', '3', '--demo', '--once'], tempCwd());
    const timer = setTimeout(() => run.child.kill('SIGKILL'), 170_000);
    const code = await run.exited;
    clearTimeout(timer);
    const out = run.out();
    expect(code, out).toBe(0);
    const hit = /hit rate\s+([\d.]+)%/.exec(out);
    expect(hit, out).not.toBeNull();
    // One 8K context, 100 questions: every request after the first gets the context from cache.
    expect(Number(hit![1])).toBeGreaterThan(50);
    const verify = /verification\s+(\d+) blocks checked byte for byte, (\d+) failures/.exec(out);
    expect(verify, out).not.toBeNull();
    expect(Number(verify![1])).toBeGreaterThan(0);
    expect(Number(verify![2])).toBe(0);
    expect(out).toMatch(/requests\s+100\b/);
    expect(out).toMatch(/get latency\s+p50 [\d.]+ ms\s+p95 [\d.]+ ms\s+p99 [\d.]+ ms/);
    expect(out).toContain('cluster stopped.');
  }, 180_000);
});

describe('kvfabric up (kept running) and kvfabric status', () => {
  const cwd = tempCwd();
  const stateFile = path.join(cwd, '.kvfabric', 'cluster.json');
  let run: Run;
  let state: ClusterState;

  beforeAll(async () => {
    run = startUp(['--shards', '2', '--model', 'tiny-test'], cwd);
    await waitFor('the state file of kvfabric up', () => Promise.resolve(existsSync(stateFile)), 90_000);
    state = JSON.parse(readFileSync(stateFile, 'utf8')) as ClusterState;
  }, 120_000);
  afterAll(() => {
    if (run.child.exitCode === null) run.child.kill('SIGKILL');
    for (const p of state?.processes ?? []) if (pidAlive(p.pid)) process.kill(p.pid, 'SIGKILL');
  });

  it('writes a state file with connection info and every process it started', () => {
    expect(state.pid).toBe(run.child.pid);
    expect(state.natsUrl).toMatch(/^nats:\/\/127\.0\.0\.1:\d+$/);
    expect(state.redisUrl).toMatch(/^redis:\/\/127\.0\.0\.1:\d+$/);
    expect(state.env.KVFABRIC_NATS_SERVERS).toBe(state.natsUrl);
    expect(state.processes.map((p) => p.role).sort()).toEqual([
      'coordinator',
      'nats-server',
      'redis-server',
      'shard-node',
      'shard-node',
    ]);
    for (const p of state.processes) expect(pidAlive(p.pid), p.name).toBe(true);
  });

  it('status --json reports members, placement, epoch and no stranded bytes on a fresh cluster', () => {
    const r = status(cwd, ['--json']);
    expect(r.code, r.stderr).toBe(0);
    const st = JSON.parse(r.stdout) as Record<string, any>;
    expect(st.members.map((m: { nodeId: string }) => m.nodeId).sort()).toEqual(['shard-1', 'shard-2']);
    for (const m of st.members) {
      expect(m.role).toBe('shard');
      expect(m.capacityBytes).toBeGreaterThan(0);
      expect(m.models).toContain('tiny-test');
    }
    expect(st.epoch).toBeGreaterThanOrEqual(1);
    expect(st.leader.id).toBe('coord-1');
    const grid = st.placement.grid as (string | null)[][];
    expect(grid).toHaveLength(st.placement.layerGroups);
    expect(grid.every((row) => row.length === st.placement.seqBuckets)).toBe(true);
    expect(grid.flat().every((n) => n === 'shard-1' || n === 'shard-2')).toBe(true);
    expect(st.stranded).toMatchObject({ complete: true, stranded: { bytes: 0, blocks: 0, chunks: 0 } });
    expect(st.hitRate.value).toBeNull();
    expect(st.source).toBe(stateFile);
    const text = status(cwd);
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/placement grid: \d+ layer groups x \d+ sequence buckets/);
    expect(text.stdout).toMatch(/stranded bytes: 0 B/);
  });

  it('counts the blocks after a chunk whose index entry is gone as stranded', async () => {
    const tiny = BUILTIN_PROFILES['tiny-test']!;
    const kvf = await connect({ natsServers: state.natsUrl, redisUrl: state.redisUrl, model: tiny.id });
    const redis = new Redis(state.redisUrl);
    try {
      const layout = await kvf.layout();
      const tokens = randomTokens(mulberry32(7), 5 * tiny.chunkTokens);
      const put = await kvf.put(tokens, kvFor(tokens, layout, 'default').kv);
      expect(put.chunksStored).toBe(5);
      const hashes = chunkHashes(tokens, {
        modelId: tiny.id,
        namespace: 'default',
        chunkTokens: tiny.chunkTokens,
      });
      expect(await redis.del(`${state.keyPrefix}:idx:${hashes[1]}`)).toBe(1);
      const r = status(cwd, ['--json']);
      expect(r.code, r.stderr).toBe(0);
      const out = JSON.parse(r.stdout) as { stranded: Record<string, any>; replicationFactor: number };
      const s = out.stranded;
      // Every stored copy holds arena bytes, so blocks and bytes count copies: with 2 nodes and
      // the default replication factor 2, each block is on both (the put acknowledged 'all').
      const copies = Math.min(out.replicationFactor, 2);
      expect(put.replicated).toBe(copies - 1);
      const perChunk = copies * layout.blockBytes.reduce((a, b) => a + b, 0);
      const blocksPerChunk = copies * layout.groups.length;
      expect(s.reachable).toEqual({ chunks: 1, blocks: blocksPerChunk, bytes: perChunk });
      expect(s.stranded).toEqual({ chunks: 4, blocks: 4 * blocksPerChunk, bytes: 4 * perChunk });
      expect(s.byReason.notIndexed.chunks).toBe(1);
      expect(s.byReason.ancestorMissing.chunks).toBe(3);
    } finally {
      redis.disconnect();
      await kvf.close();
    }
  });

  it('status exits non-zero with a clear message when it cannot reach a cluster', () => {
    const r = status(cwd, ['--nats', 'nats://127.0.0.1:1', '--redis', 'redis://127.0.0.1:1']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/cannot reach the cluster: cannot reach NATS at nats:\/\/127\.0\.0\.1:1/);
  });

  it('SIGTERM stops everything: exit 0, no process left, state file removed', async () => {
    run.child.kill('SIGTERM');
    expect(await run.exited, run.out()).toBe(0);
    expect(run.out()).toContain('cluster stopped.');
    for (const p of state.processes) expect(pidAlive(p.pid), `${p.name} (pid ${p.pid})`).toBe(false);
    expect(existsSync(stateFile)).toBe(false);
    const r = status(cwd);
    expect(r.code).toBe(1);
  });
});
