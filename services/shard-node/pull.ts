/**
 * Copying blocks from a peer's arena into this node's: allocate slots in the local block table
 * (as a writer would), UCX-GET the bytes from the peer's slots into them, and commit with the
 * peer's crc32c, which the block table re-verifies against the bytes that arrived. A block whose
 * bytes do not match (the peer reused the slot meanwhile, a flipped bit in flight) is freed and
 * never readable. Used by `replicate` (pushes from a primary), backfill and hot copies.
 */
import { KvfError } from '../../shared/errors.js';
import type { MemberRecord } from '../../shared/protocol/cluster.js';
import type { ReplicaBlock } from '../../shared/protocol/shard.js';
import { commitInSlices } from './commit-slices.js';
import type { ModelArena } from './model-arena.js';
import type { PeerLinks, PeerTransfer } from './peers.js';

export type PullStatus = 'stored' | 'present' | 'full' | 'checksum_mismatch' | 'failed';

export interface PullResult {
  statuses: PullStatus[];
  bytes: number;
}

/** How long a pull waits for a block another local writer is writing (busy) to land. */
const BUSY_WAIT_MS = 1000;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function pullBlocks(
  m: ModelArena,
  peers: PeerLinks,
  source: MemberRecord,
  blocks: readonly ReplicaBlock[],
  opts: { hot: boolean },
): Promise<PullResult> {
  const statuses: PullStatus[] = new Array<PullStatus>(blocks.length).fill('failed');
  for (const b of blocks) {
    if (b.g >= m.groupCount) throw new KvfError('BAD_REQUEST', `layer group ${b.g} out of range`);
  }
  const { allocId, results } = m.store.allocate(
    blocks.map((b) => ({
      hash: b.hash,
      g: b.g,
      chunkIndex: b.i,
      parent: b.parent,
      ...(b.s !== undefined ? { s: b.s } : {}),
      hot: opts.hot,
    })),
  );
  const todo: { k: number; slot: number; staging: Buffer | undefined }[] = [];
  const busy: number[] = [];
  results.forEach((r, k) => {
    if (r.status === 'allocated') {
      todo.push({ k, slot: r.slot, staging: undefined });
    } else if (r.status === 'present') {
      statuses[k] = 'present';
      const b = blocks[k] as ReplicaBlock;
      // A replica copy of a block held as a hot copy becomes an ordinary block.
      if (!opts.hot) m.store.keep(b.hash, b.g, b.s);
    } else if (r.status === 'busy') {
      busy.push(k);
    } else {
      statuses[k] = 'full';
    }
  });
  let bytes = 0;
  if (todo.length > 0) {
    const transfers: PeerTransfer[] = todo.map((t) => {
      const b = blocks[t.k] as ReplicaBlock;
      const length = m.groupBytes(b.g);
      const view = m.arena.hostView(t.slot);
      if (view !== undefined) return { remoteAddress: b.address, local: view, localOffset: 0, length };
      // Device arenas: stage through host memory, then copy in.
      t.staging = Buffer.allocUnsafe(length);
      return { remoteAddress: b.address, local: t.staging, localOffset: 0, length };
    });
    let ok: boolean[] = todo.map(() => false);
    try {
      const res = await peers.get(source, m.profile.id, transfers);
      ok = res.map((r) => r.ok);
    } catch {
      // whole batch failed: every block stays 'failed' and its slot is aborted below
    }
    const commits: { hash: string; g: number; checksum: number }[] = [];
    todo.forEach((t, j) => {
      if (!ok[j]) return;
      const b = blocks[t.k] as ReplicaBlock;
      if (t.staging !== undefined) m.arena.write(t.slot, 0, t.staging);
      commits.push({ hash: b.hash, g: b.g, checksum: b.checksum });
    });
    if (commits.length > 0) {
      const res = await commitInSlices(m, allocId, commits);
      let c = 0;
      todo.forEach((t, j) => {
        if (!ok[j]) return;
        const r = res[c++];
        if (r?.status === 'committed') {
          statuses[t.k] = 'stored';
          bytes += transfers[j]?.length ?? 0;
        } else if (r?.status === 'checksum_mismatch') {
          statuses[t.k] = 'checksum_mismatch';
        }
      });
    }
    m.store.abort(allocId); // frees whatever was not committed (failed transfers)
  }
  if (busy.length > 0) await waitBusy(m, blocks, busy, statuses);
  return { statuses, bytes };
}

/** Blocks another local write had in flight: present once it lands, else failed (bounded wait). */
async function waitBusy(
  m: ModelArena,
  blocks: readonly ReplicaBlock[],
  busy: number[],
  statuses: PullStatus[],
): Promise<void> {
  const deadline = performance.now() + BUSY_WAIT_MS;
  let left = busy;
  while (left.length > 0 && performance.now() < deadline) {
    await sleep(10);
    left = left.filter((k) => {
      const b = blocks[k] as ReplicaBlock;
      if (!m.store.has(b.hash, b.g)) return true;
      statuses[k] = 'present';
      return false;
    });
  }
}
