/**
 * The replica-side "in sync" state of a shard node (services/shard-node/replication.ts): a cell is
 * readable from a replica, and counted in sync, only while the cell keeps the replica set (cell
 * epoch) its backfill completed at. Regression: a cell that moved to another node and back used
 * to keep its old sync, so the returning replica served and counted a cell it had missed writes of.
 */
import { describe, expect, it } from 'vitest';
import type { PlacementTable } from '../../shared/protocol/cluster.js';
import { Replication, type ReplicationHost } from '../../services/shard-node/replication.js';

function table(epoch: number, cells: Record<string, { replicas: string[]; epoch: number }>): PlacementTable {
  return {
    epoch,
    term: 1,
    leaderId: 'c1',
    spec: { layerGroups: 1, seqBuckets: 2, seqBucketTokens: 256 },
    replicationFactor: 2,
    cells,
    members: {},
    reason: 'test',
    updatedAt: 0,
  };
}

function replicaOf(nodeId: string): Replication {
  const host = {
    log: { info: () => undefined, warn: () => undefined, debug: () => undefined, error: () => undefined },
    js: () => undefined,
    table: () => undefined,
    incarnation: () => 'i1',
  } as unknown as ReplicationHost;
  return new Replication({ nodeId, replicationAckTimeoutMs: 1000, requestTimeoutMs: 1000 }, host);
}

describe('replica in-sync state', () => {
  it('holds while the cell keeps its epoch, primary and this replica', () => {
    const r = replicaOf('B');
    const t1 = table(5, {
      '0.0': { replicas: ['A', 'B'], epoch: 5 },
      '0.1': { replicas: ['A', 'B'], epoch: 3 },
    });
    r.markInSync('0.0', 'A', 5);
    r.markInSync('0.1', 'A', 3);
    expect(r.readable('0.0', t1)).toBe(true);
    // A later table that does not touch the cells keeps the sync.
    const t2 = table(6, {
      '0.0': { replicas: ['A', 'B'], epoch: 5 },
      '0.1': { replicas: ['A', 'B'], epoch: 3 },
    });
    r.prune(t2);
    expect(r.syncedWith('0.0', 'A', 5)).toBe(true);
    expect(r.readable('0.1', t2)).toBe(true);
  });

  it('is dropped when the cell moves away from this replica, and not restored when it comes back', () => {
    const r = replicaOf('B');
    r.markInSync('0.0', 'A', 5);
    r.prune(table(7, { '0.0': { replicas: ['A', 'C'], epoch: 7 } })); // written without B now
    expect(r.inSync.has('0.0')).toBe(false);
    const back = table(8, { '0.0': { replicas: ['A', 'B'], epoch: 8 } });
    r.prune(back);
    expect(r.readable('0.0', back)).toBe(false); // needs a backfill first
  });

  it('is not trusted across an epoch change this node never saw (a skipped table version)', () => {
    const r = replicaOf('B');
    r.markInSync('0.0', 'A', 5);
    // Tables 6 and 7 (cell on A, C) were never applied here; 8 puts it back on A, B.
    const back = table(8, { '0.0': { replicas: ['A', 'B'], epoch: 8 } });
    expect(r.readable('0.0', back)).toBe(false);
    r.prune(back);
    expect(r.inSync.has('0.0')).toBe(false);
  });

  it('is dropped when the primary changes or the cell disappears', () => {
    const r = replicaOf('B');
    r.markInSync('0.0', 'A', 5);
    r.markInSync('0.1', 'A', 5);
    r.prune(table(6, { '0.0': { replicas: ['C', 'B'], epoch: 6 } }));
    expect(r.inSync.size).toBe(0);
    expect(r.inSyncEpoch.size).toBe(0);
  });
});
