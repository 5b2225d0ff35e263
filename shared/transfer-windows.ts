/**
 * Batching of one-sided transfers to one peer. The native layer starts every op's deadline when
 * the op is submitted, so submitting a whole 1 GiB prefix at once makes the tail ops wait behind
 * the head and time out on a slow transport. Consecutive windows bound each op's wait while still
 * keeping many transfers in flight. Used by the SDK's data plane and by shard-node pulls.
 */
/** Split ops into consecutive windows of at most maxBytes (or one op) and maxOps each. */
export function transferWindows<T extends { length: number }>(
  ops: readonly T[],
  maxBytes: number,
  maxOps: number,
): T[][] {
  const windows: T[][] = [];
  let cur: T[] = [];
  let bytes = 0;
  for (const op of ops) {
    if (cur.length > 0 && (bytes + op.length > maxBytes || cur.length >= maxOps)) {
      windows.push(cur);
      cur = [];
      bytes = 0;
    }
    cur.push(op);
    bytes += op.length;
  }
  if (cur.length > 0) windows.push(cur);
  return windows;
}
