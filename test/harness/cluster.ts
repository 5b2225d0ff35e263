/**
 * Test fixtures for cluster-level tests: a local cluster of child processes
 * (shared/local-cluster.ts) started in beforeAll and stopped in afterAll, the compiled CLI it
 * needs, and small helpers to write a placement table by hand (tests that drive shard nodes
 * without a coordinator).
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { KV } from '@nats-io/kv';
import { afterAll, beforeAll } from 'vitest';
import {
  startLocalCluster,
  type LocalCluster,
  type LocalClusterOptions,
} from '../../shared/local-cluster.js';
import type { PartitionSpec } from '../../shared/partition.js';
import { encodeRecord, PLACEMENT_KEY, type PlacementTable } from '../../shared/protocol/cluster.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/**
 * Compile the TypeScript into dist/ (incremental, so cheap when nothing changed). Emits even when
 * a file elsewhere in the tree has a type error (tsc's default), so only a missing CLI fails.
 */
export function buildDist(): void {
  const r = spawnSync(
    process.execPath,
    [path.join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json'],
    {
      cwd: ROOT,
      encoding: 'utf8',
    },
  );
  if (!existsSync(path.join(ROOT, 'dist/services/cli/main.js'))) {
    throw new Error(`npm run build:ts produced no CLI:\n${r.stdout}\n${r.stderr}`);
  }
}

/** beforeAll: build dist/, start the cluster; afterAll: stop it. Fields are valid inside tests. */
export function useLocalCluster(opts: LocalClusterOptions): {
  readonly cluster: LocalCluster;
  readonly logs: string[];
} {
  let c: LocalCluster | undefined;
  const logs: string[] = [];
  beforeAll(async () => {
    buildDist();
    // Arena prefaulting (shard.prefault, on by default) is off here: it spends seconds of CPU per
    // GiB right after start, and these clusters run sub-second liveness timeouts on 2 cores. The
    // bench and `kvfabric up` tests run with it on; native-arena.test.ts tests it directly.
    c = await startLocalCluster({
      log: (l) => logs.push(l),
      ...opts,
      env: { KVFABRIC_SHARD_PREFAULT: 'false', ...opts.env },
    });
  });
  afterAll(async () => {
    await c?.stop();
  });
  return {
    get cluster() {
      if (!c) throw new Error(`local cluster not started:\n${logs.slice(-40).join('\n')}`);
      return c;
    },
    logs,
  };
}

/** Write a placement table as a coordinator would (no CAS: tests own the bucket). */
export async function writePlacement(
  kv: KV,
  spec: PartitionSpec,
  epoch: number,
  cells: Record<string, { replicas: string[]; epoch: number }>,
): Promise<PlacementTable> {
  const members: PlacementTable['members'] = {};
  for (const c of Object.values(cells)) {
    for (const n of c.replicas) members[n] = { incarnation: 'test', role: 'shard', weight: 1 };
  }
  const table: PlacementTable = {
    epoch,
    term: 1,
    leaderId: 'test',
    spec,
    replicationFactor: 1,
    cells,
    members,
    reason: 'test',
    updatedAt: Date.now(),
  };
  await kv.put(PLACEMENT_KEY, encodeRecord(table));
  return table;
}

/** Poll until cond() holds; throws with `what` after timeoutMs. */
export async function waitFor(
  what: string,
  cond: () => boolean | Promise<boolean>,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
