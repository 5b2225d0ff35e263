/**
 * Committing a batch of blocks without blocking the event loop: every block's crc32c is verified
 * on libuv's thread pool first (Arena.checksums, split over several threads), and only then is the
 * block table updated, synchronously and cheaply. A 1 GiB batch verified on the JS thread held the
 * loop for ~0.1 s of CRC plus, on a fresh arena, seconds of page faults: long enough to miss
 * heartbeats and be declared dead in the middle of a put. The table update still goes in slices
 * with a yield between them, so a huge batch never monopolises the loop.
 */
import { isKvfError } from '../../shared/errors.js';
import type { BlockRef, CommitResult } from './block-store.js';
import type { ModelArena } from './model-arena.js';

/** Bytes of blocks committed to the table between two yields to the event loop. */
export const COMMIT_SLICE_BYTES = 64 * 1024 * 1024;
/** Bytes of checksums per thread-pool task (several tasks run at once). */
const CHECKSUM_TASK_BYTES = 64 * 1024 * 1024;

type Committable = Pick<ModelArena, 'slotBytes' | 'store' | 'arena' | 'groupBytes' | 'groupCount'>;

/** Checksums of the blocks still pending in the allocation, computed off the event loop. */
async function pendingChecksums(
  m: Committable,
  storeId: string,
  blocks: readonly BlockRef[],
): Promise<(number | undefined)[]> {
  const at: { k: number; index: number; length: number }[] = [];
  blocks.forEach((b, k) => {
    const slot = m.store.pendingSlot(storeId, b.hash, b.g);
    if (slot !== undefined && b.g >= 0 && b.g < m.groupCount) {
      at.push({ k, index: slot, length: m.groupBytes(b.g) });
    }
  });
  const perTask = Math.max(1, Math.floor(CHECKSUM_TASK_BYTES / m.slotBytes));
  const tasks: Promise<number[]>[] = [];
  for (let i = 0; i < at.length; i += perTask) tasks.push(m.arena.checksums(at.slice(i, i + perTask)));
  const crcs = (await Promise.all(tasks)).flat();
  const out: (number | undefined)[] = blocks.map(() => undefined);
  at.forEach((x, j) => (out[x.k] = crcs[j]));
  return out;
}

/**
 * Only the first slice may report an unknown allocation; a later slice that finds it gone (fully
 * committed by an earlier slice, or expired between slices) reports its blocks as unknown, i.e.
 * not committed.
 */
export async function commitInSlices(
  m: Committable,
  storeId: string,
  blocks: readonly (BlockRef & { checksum: number })[],
): Promise<CommitResult[]> {
  const actual = await pendingChecksums(m, storeId, blocks);
  const perSlice = Math.max(1, Math.floor(COMMIT_SLICE_BYTES / m.slotBytes));
  const results: CommitResult[] = [];
  for (let i = 0; i < blocks.length; i += perSlice) {
    const slice = blocks.slice(i, i + perSlice);
    if (i > 0) await new Promise<void>((resolve) => setImmediate(resolve));
    try {
      results.push(...m.store.commit(storeId, slice, actual.slice(i, i + perSlice)));
    } catch (err) {
      if (i === 0 || !isKvfError(err, 'ALLOCATION_NOT_FOUND')) throw err;
      for (let k = 0; k < slice.length; k++) results.push({ status: 'unknown' });
    }
  }
  return results;
}
