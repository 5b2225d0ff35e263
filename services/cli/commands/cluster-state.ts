/**
 * The state file `kvfabric up` writes (default `.kvfabric/cluster.json` in the working directory,
 * git-ignored) so that `kvfabric status` and workers find a local cluster without flags. It holds
 * connection info and pids only: no secrets (the local cluster has none).
 */
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { DemoSummary } from '../demo/workload.js';

export const DEFAULT_STATE_FILE = path.join('.kvfabric', 'cluster.json');
export const STATE_FILE_VERSION = 1;

export interface ProcessEntry {
  name: string;
  role: 'nats-server' | 'redis-server' | 'coordinator' | 'shard-node';
  pid: number;
}

export interface ClusterState {
  version: number;
  /** pid of the `kvfabric up` process that owns the cluster. */
  pid: number;
  startedAt: string;
  natsUrl: string;
  redisUrl: string;
  keyPrefix: string;
  /** Model the cluster was started for (`--model`). */
  model: string;
  /** KVFABRIC_* variables a worker needs. */
  env: Record<string, string>;
  processes: ProcessEntry[];
  /** The demo's closing summary, when one ran (where `kvfabric status` takes its hit rate from). */
  demo?: DemoSummary & { finishedAt: string };
}

export function stateFilePath(p: string | undefined): string {
  return path.resolve(p ?? DEFAULT_STATE_FILE);
}

/** Atomic write (tmp + rename): a reader never sees half a file. */
export function writeState(file: string, state: ClusterState): void {
  mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(state, null, 2) + '\n');
  renameSync(tmp, file);
}

/** The state file, or undefined when absent; throws on a file that is not a state file. */
export function readState(file: string): ClusterState | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  const s = JSON.parse(text) as Partial<ClusterState>;
  if (s.version !== STATE_FILE_VERSION || typeof s.natsUrl !== 'string' || typeof s.redisUrl !== 'string') {
    throw new Error(`${file} is not a kvfabric cluster state file (version ${String(s.version)})`);
  }
  return s as ClusterState;
}

/** Remove the state file if it is still the one `pid` wrote (another `up` may have replaced it). */
export function removeState(file: string, pid: number): void {
  try {
    if (readState(file)?.pid === pid) rmSync(file, { force: true });
  } catch {
    // A corrupt or foreign file is left for the operator.
  }
}

/** Whether a process with this pid exists (signal 0 checks without signalling). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
