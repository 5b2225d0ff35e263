/**
 * Fault injectors and the placement arithmetic they need: which node holds which of the
 * workload's blocks, kill -9 / SIGSTOP of actors, the shard node's debug_corrupt hook, a writer
 * whose bytes change after their checksum was computed, and a writer process killed mid-put.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { NatsConnection } from '@nats-io/transport-node';
import type { ChildHandle, LocalCluster } from '../../../shared/local-cluster.js';
import { groupChunksByCell, type PartitionSpec } from '../../../shared/partition.js';
import type { PlacementTable } from '../../../shared/protocol/cluster.js';
import { debugCorruptReplySchema } from '../../../shared/protocol/shard.js';
import type { KvfClient } from '../../../shared/sdk/mod.js';
import { callShard } from '../../../shared/sdk/shard-rpc.js';
import type { Corpus, Prompt } from './corpus.js';

/** Cells (`g.s`) of every block of the first `chunks` chunks of a prompt, with each block. */
export function blocksByCell(
  spec: PartitionSpec,
  corpus: Corpus,
  prompt: Prompt,
  chunks: number,
): Map<string, { i: number; g: number; hash: string }[]> {
  const out = new Map<string, { i: number; g: number; hash: string }[]>();
  const hashes = prompt.hashes.slice(0, chunks);
  const perGroup = groupChunksByCell(spec, hashes, corpus.layout.chunkTokens);
  perGroup.forEach((cells, g) => {
    if (g >= corpus.layout.groups.length) return;
    for (const [cell, idx] of cells) {
      const list = out.get(cell) ?? [];
      for (const i of idx) list.push({ i, g, hash: hashes[i] as string });
      out.set(cell, list);
    }
  });
  return out;
}

/** Blocks of the acknowledged chunks per node, by role in the cell's replica set. */
export function blocksPerNode(
  table: PlacementTable,
  corpus: Corpus,
  acked: Map<number, number>,
): { primary: Map<string, number>; replica: Map<string, number> } {
  const primary = new Map<string, number>();
  const replica = new Map<string, number>();
  for (const [pid, chunks] of acked) {
    const prompt = corpus.prompts[pid] as Prompt;
    for (const [cell, blocks] of blocksByCell(table.spec, corpus, prompt, chunks)) {
      const set = table.cells[cell]?.replicas ?? [];
      set.forEach((n, k) => {
        const m = k === 0 ? primary : replica;
        m.set(n, (m.get(n) ?? 0) + blocks.length);
      });
    }
  }
  return { primary, replica };
}

/** The key with the largest count (ties: first seen). */
export function argMax(m: Map<string, number>): string | undefined {
  let best: string | undefined;
  let n = -1;
  for (const [k, v] of m) if (v > n) [best, n] = [k, v];
  return best;
}

/** Acknowledged prompts with at least one block on `node`. */
export function promptsOnNode(
  table: PlacementTable,
  corpus: Corpus,
  acked: Map<number, number>,
  node: string,
): number[] {
  const out: number[] = [];
  for (const [pid, chunks] of acked) {
    const prompt = corpus.prompts[pid] as Prompt;
    const cells = blocksByCell(table.spec, corpus, prompt, chunks);
    if ([...cells.keys()].some((c) => table.cells[c]?.replicas.includes(node))) out.push(pid);
  }
  return out;
}

export function shardHandle(cluster: LocalCluster, nodeId: string): ChildHandle {
  const h = cluster.shards.find((s) => s.nodeId === nodeId);
  if (!h) throw new Error(`no shard process ${nodeId} in this cluster`);
  return h;
}

/** Flip one byte of a stored block through the node's test hook (KVFABRIC_TEST_HOOKS=1). */
export async function debugCorrupt(
  nc: NatsConnection,
  nodeId: string,
  model: string,
  hash: string,
  g: number,
  byteOffset: number,
): Promise<{ flipped: boolean; error?: string }> {
  const r = await callShard(
    nc,
    nodeId,
    'debug_corrupt',
    { model, hash, g, byteOffset },
    debugCorruptReplySchema,
    3000,
  );
  return r.kind === 'ok'
    ? { flipped: r.reply.flipped }
    : { flipped: false, error: `${r.error.code}: ${r.error.message}` };
}

interface Transfer {
  local: Uint8Array;
  localOffset: number;
  length: number;
}
type PutFn = (member: unknown, model: string, transfers: readonly Transfer[]) => Promise<unknown>;

/**
 * Make every UCX put of this client flip one byte of each block AFTER the SDK computed the
 * block's crc32c (the SDK computes checksums before it calls the data plane): the bytes that
 * reach the node differ from the writer's checksum, as a bit flip on the wire would. Reaches into
 * the SDK's internals (test-only); throws when their shape changed. Returns an undo function.
 */
export function corruptPutsInFlight(client: KvfClient, onFlip?: () => void): () => void {
  const data = (client as unknown as { ctx?: { data?: { put?: PutFn } } }).ctx?.data;
  const original = data?.put;
  if (data === undefined || typeof original !== 'function') {
    throw new Error('in-flight corruption hook unavailable: KvfClient.ctx.data.put not found');
  }
  data.put = (member, model, transfers) => {
    for (const t of transfers) {
      const at = t.localOffset + Math.floor(t.length / 2);
      t.local[at] = (t.local[at] as number) ^ 0x5a;
      onFlip?.();
    }
    return original.call(data, member, model, transfers);
  };
  return () => {
    data.put = original;
  };
}

/** Marker the writer child prints once its bytes are in the node's slots (not committed). */
export const WRITER_MARKER = 'KVF_CHAOS_WRITER_BYTES_WRITTEN';

/**
 * Make the client's next put write its bytes, print WRITER_MARKER and then hang before commit
 * (the parent kills the process there). Used inside the writer child.
 */
export function hangAfterUcxPut(client: KvfClient): void {
  const data = (client as unknown as { ctx?: { data?: { put?: PutFn } } }).ctx?.data;
  const original = data?.put;
  if (data === undefined || typeof original !== 'function') {
    throw new Error('writer hook unavailable: KvfClient.ctx.data.put not found');
  }
  data.put = async (member, model, transfers) => {
    await original.call(data, member, model, transfers);
    process.stdout.write(`${WRITER_MARKER}\n`);
    return new Promise(() => undefined); // never commits
  };
}

export interface WriterChildSpec {
  natsServers: string[];
  redisUrl: string;
  model: string;
  namespace: string;
  seed: number;
  promptId: number;
}

function cliPath(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  // services/cli/chaos -> repo root; dist/services/cli/chaos -> repo root
  const up = here.split(path.sep).includes('dist') ? ['..', '..', '..', '..'] : ['..', '..', '..'];
  return path.resolve(here, ...up, 'bin', 'kvfabric.js');
}

/**
 * Run a writer in a child process (`kvfabric chaos --writer-child`), wait until its bytes are in
 * the slots, SIGKILL it before it commits. Resolves with the kill time.
 */
export async function killWriterMidPut(spec: WriterChildSpec, timeoutMs: number): Promise<number> {
  const arg = Buffer.from(JSON.stringify(spec)).toString('base64');
  const child = spawn(process.execPath, [cliPath(), 'chaos', '--writer-child', arg], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, UCX_MEM_MMAP_HOOK_MODE: 'none' },
  });
  let out = '';
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  try {
    return await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`writer child gave no marker in ${timeoutMs} ms:\n${out.slice(-1500)}`)),
        timeoutMs,
      );
      const onData = (b: Buffer): void => {
        out += b.toString();
        if (out.includes(WRITER_MARKER)) {
          child.kill('SIGKILL');
          clearTimeout(timer);
          resolve(Date.now());
        }
      };
      child.stdout.on('data', onData);
      child.stderr.on('data', (b: Buffer) => (out += b.toString()));
      child.once('exit', (code) => {
        clearTimeout(timer);
        if (!out.includes(WRITER_MARKER))
          reject(new Error(`writer child exited (${code}) before writing:\n${out.slice(-1500)}`));
      });
    });
  } finally {
    child.kill('SIGKILL');
    await exited;
  }
}
