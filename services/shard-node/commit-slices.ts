/**
 * Committing a batch of blocks without blocking the event loop for long: the block table's commit
 * verifies every block's crc32c synchronously, and a 1 GiB batch (first-touch page faults
 * included) blocks the loop for seconds, long enough to miss heartbeats and be declared dead in
 * the middle of a put. Slices of COMMIT_SLICE_BYTES with a yield between them keep timers and
 * other requests running.
 */
import { isKvfError } from '../../shared/errors.js';
import type { BlockRef, CommitResult } from './block-store.js';
import type { ModelArena } from './model-arena.js';

/** Bytes of checksums verified between two yields to the event loop. */
export const COMMIT_SLICE_BYTES = 64 * 1024 * 1024;

/**
 * Only the first slice may report an unknown allocation; a later slice that finds it gone (fully
 * committed by an earlier slice, or expired between slices) reports its blocks as unknown, i.e.
 * not committed.
 */
export async function commitInSlices(
  m: Pick<ModelArena, 'slotBytes' | 'store'>,
  storeId: string,
  blocks: readonly (BlockRef & { checksum: number })[],
): Promise<CommitResult[]> {
  const perSlice = Math.max(1, Math.floor(COMMIT_SLICE_BYTES / m.slotBytes));
  const results: CommitResult[] = [];
  for (let i = 0; i < blocks.length; i += perSlice) {
    const slice = blocks.slice(i, i + perSlice);
    if (i > 0) await new Promise<void>((resolve) => setImmediate(resolve));
    try {
      results.push(...m.store.commit(storeId, slice));
    } catch (err) {
      if (i === 0 || !isKvfError(err, 'ALLOCATION_NOT_FOUND')) throw err;
      for (let k = 0; k < slice.length; k++) results.push({ status: 'unknown' });
    }
  }
  return results;
}
