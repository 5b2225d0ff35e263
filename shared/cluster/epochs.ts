/**
 * Epoch fencing for shard requests. Every batched shard request carries `epoch`: the placement
 * table epoch the client resolved its cells with. A cell's own epoch is the table epoch at which
 * its replica set last changed, so a client whose table is older than the cell's last change is
 * stale, while a client a few epochs behind on unrelated cells keeps working.
 *
 * The shard node checks each cell against its own PlacementCache:
 *   - request epoch  > node's table epoch -> the node is behind: refresh the cache, check again
 *   - cell epoch     > request epoch      -> STALE_EPOCH (client refreshes and retries)
 *   - node not in the cell's replica set  -> NOT_OWNER
 *   - primary-only operation (allocate/commit) and node is not replicas[0] -> NOT_OWNER
 */
import { KvfError } from '../errors.js';
import type { PlacementTable } from '../protocol/cluster.js';

export type OwnershipCheck =
  | { ok: true; position: number }
  | { ok: false; outcome: 'node_behind' | 'stale_epoch' | 'not_owner' | 'unknown_cell' | 'no_table' };

export interface OwnershipQuery {
  cellId: string;
  /** Table epoch the client used. */
  epoch: number;
  /** The checking node. */
  nodeId: string;
  /** Require the node to be the cell's primary (writes). @default false */
  primaryOnly?: boolean;
}

export function checkOwnership(table: PlacementTable | undefined, q: OwnershipQuery): OwnershipCheck {
  if (table === undefined) return { ok: false, outcome: 'no_table' };
  if (q.epoch > table.epoch) return { ok: false, outcome: 'node_behind' };
  const cell = Object.hasOwn(table.cells, q.cellId) ? table.cells[q.cellId] : undefined;
  if (cell === undefined) return { ok: false, outcome: 'unknown_cell' };
  if (cell.epoch > q.epoch) return { ok: false, outcome: 'stale_epoch' };
  const position = cell.replicas.indexOf(q.nodeId);
  if (position < 0 || (q.primaryOnly === true && position !== 0)) return { ok: false, outcome: 'not_owner' };
  return { ok: true, position };
}

/** The typed error to reply with for a failed check (node_behind only after a refresh). */
export function ownershipError(check: OwnershipCheck, q: OwnershipQuery, table?: PlacementTable): KvfError {
  const details = {
    cellId: q.cellId,
    requestEpoch: q.epoch,
    tableEpoch: table?.epoch ?? 0,
    nodeId: q.nodeId,
  };
  if (check.ok) throw new Error('ownershipError called for a passing check');
  switch (check.outcome) {
    case 'stale_epoch':
      return new KvfError('STALE_EPOCH', `cell ${q.cellId} changed after epoch ${q.epoch}`, {
        details: { ...details, cellEpoch: table?.cells[q.cellId]?.epoch },
      });
    case 'not_owner':
      return new KvfError('NOT_OWNER', `node ${q.nodeId} does not own cell ${q.cellId}`, { details });
    case 'node_behind':
      // The node could not catch up with the client's epoch: the client should retry shortly.
      return new KvfError('STALE_EPOCH', `node ${q.nodeId} has not seen epoch ${q.epoch} yet`, {
        details: { ...details, nodeBehind: true },
      });
    case 'unknown_cell':
    case 'no_table':
      return new KvfError('NO_PLACEMENT', `no placement for cell ${q.cellId}`, { details });
  }
}
