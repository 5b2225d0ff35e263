/**
 * Placement: cells (layer groups x sequence buckets) to ordered replica sets. Pure functions, no
 * I/O; the coordinator leader calls computePlacement and CAS-writes the result.
 *
 * Which nodes: weighted rendezvous hashing (HRW). For cell c and node n with weight w (its
 * capacity), score(c, n) = -w / ln(u(c, n)) with u a hash of (c, n) mapped into (0, 1). This is
 * the "logarithmic method" of weighted HRW: node n wins a cell with probability w / sum(w), and
 * since a node's score for a cell never depends on the other nodes, a join moves only the cells
 * the new node wins and a leave moves only the cells the leaving node held.
 *
 * The primary is the best-scoring 'shard' node; the other replicas are the best of the remaining
 * nodes of either role ('replica' nodes only hold copies). A cell gets min(rf, eligible) nodes.
 *
 * Order within a set: nodes that were already in the cell keep their previous relative order
 * and lead; newcomers follow in score order. When a primary dies its next replica (which holds
 * the data) becomes primary instead of a fresh, empty node; a 'replica' node is never first.
 * (Failover promotion of in-sync replicas and backfill are issue 5; this order gives them the
 * right starting point.)
 *
 * Epochs: every computed change bumps the table epoch by one; a cell whose replica set changed,
 * or one of whose nodes restarted (new incarnation), gets cell epoch = the new table epoch.
 */
import { createHash } from 'node:crypto';
import { allCells, cellId, type PartitionSpec } from '../../shared/partition.js';
import {
  CLUSTER_LIMITS,
  type CellMove,
  type CellPlacement,
  type MemberRole,
  type PlacementMember,
  type PlacementTable,
} from '../../shared/protocol/cluster.js';
import { KvfError } from '../../shared/errors.js';

export interface PlacementNode {
  nodeId: string;
  /** Capacity in bytes (any positive scale works: only ratios matter). 0 = takes no cells. */
  weight: number;
  role: MemberRole;
  incarnation: string;
}

export interface PlacementInput {
  /** The table currently stored, if any. */
  prev: PlacementTable | undefined;
  spec: PartitionSpec;
  replicationFactor: number;
  /** Live members. */
  nodes: readonly PlacementNode[];
  /** Fencing stamp of the writer. */
  term: number;
  leaderId: string;
  reason: string;
  nowWallMs: number;
}

export interface PlacementResult {
  table: PlacementTable;
  /** Cells whose replica set or cell epoch changed. */
  moves: CellMove[];
  /** False when the table would be identical to prev apart from bookkeeping: nothing to write. */
  changed: boolean;
}

const TWO_POW_52 = 2 ** 52;

/** u(c, n) in (0, 1), uniform, from sha256 (stable across processes and versions). */
export function hashUnit(cell: string, nodeId: string): number {
  const d = createHash('sha256').update(cell).update('\u0000').update(nodeId).digest();
  // 52 bits: exact in a double; +0.5 keeps u strictly inside (0, 1) so ln(u) is finite and < 0.
  const hi = d.readUInt32BE(0) >>> 12; // 20 bits
  const lo = d.readUInt32BE(4); // 32 bits
  return (hi * 2 ** 32 + lo + 0.5) / TWO_POW_52;
}

/** Weighted HRW score; larger wins. */
export function hrwScore(cell: string, nodeId: string, weight: number): number {
  if (weight <= 0) return 0;
  return -weight / Math.log(hashUnit(cell, nodeId));
}

/** Eligible nodes ranked best first for a cell (ties broken by node id, for determinism). */
export function rankNodes(cell: string, nodes: readonly PlacementNode[]): PlacementNode[] {
  return nodes
    .filter((n) => n.weight > 0)
    .map((n) => ({ n, score: hrwScore(cell, n.nodeId, n.weight) }))
    .sort((a, b) => b.score - a.score || (a.n.nodeId < b.n.nodeId ? -1 : 1))
    .map((x) => x.n);
}

/** The HRW replica set of a cell, in score order: best shard first, then the best others. */
export function chooseReplicaSet(
  cell: string,
  nodes: readonly PlacementNode[],
  replicationFactor: number,
): string[] {
  const ranked = rankNodes(cell, nodes);
  const primary = ranked.find((n) => n.role === 'shard');
  if (primary === undefined) return [];
  const rest = ranked.filter((n) => n !== primary).slice(0, replicationFactor - 1);
  return [primary.nodeId, ...rest.map((n) => n.nodeId)];
}

/**
 * Order a chosen set: previous members first in their previous order, then newcomers in score
 * order; a 'replica'-role node is never first (the first 'shard' node moves to the front).
 */
export function orderReplicaSet(
  prev: readonly string[] | undefined,
  chosen: readonly string[],
  roleOf: (nodeId: string) => MemberRole | undefined,
): string[] {
  const inChosen = new Set(chosen);
  const survivors = (prev ?? []).filter((n) => inChosen.has(n));
  const kept = new Set(survivors);
  const ordered = [...survivors, ...chosen.filter((n) => !kept.has(n))];
  const firstShard = ordered.findIndex((n) => roleOf(n) === 'shard');
  if (firstShard > 0) {
    const [s] = ordered.splice(firstShard, 1);
    if (s !== undefined) ordered.unshift(s);
  }
  return ordered;
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function sameSpec(a: PartitionSpec, b: PartitionSpec): boolean {
  return (
    a.layerGroups === b.layerGroups &&
    a.seqBuckets === b.seqBuckets &&
    a.seqBucketTokens === b.seqBucketTokens
  );
}

function validateInput(input: PlacementInput): void {
  const { spec, replicationFactor: rf } = input;
  const cells = spec.layerGroups * spec.seqBuckets;
  if (cells > CLUSTER_LIMITS.cellsMax) {
    throw new KvfError(
      'CONFIG_INVALID',
      `${cells} cells exceed the placement table limit ${CLUSTER_LIMITS.cellsMax}`,
    );
  }
  if (!Number.isInteger(rf) || rf < 1 || rf > CLUSTER_LIMITS.replicationFactorMax) {
    throw new KvfError(
      'CONFIG_INVALID',
      `replicationFactor must be 1..${CLUSTER_LIMITS.replicationFactorMax}`,
    );
  }
  const ids = new Set<string>();
  for (const n of input.nodes) {
    if (ids.has(n.nodeId)) throw new Error(`duplicate node ${n.nodeId} in placement input`);
    ids.add(n.nodeId);
  }
}

/** Compute the next placement table from the previous one and the live members. */
export function computePlacement(input: PlacementInput): PlacementResult {
  validateInput(input);
  const { prev, spec, replicationFactor, nodes } = input;
  const epoch = (prev?.epoch ?? 0) + 1;
  // A different partition spec gives cell ids a different meaning: every cell is new.
  const comparable = prev !== undefined && sameSpec(prev.spec, spec);
  const roles = new Map(nodes.map((n) => [n.nodeId, n.role]));
  const members: Record<string, PlacementMember> = {};
  for (const n of [...nodes].sort((a, b) => (a.nodeId < b.nodeId ? -1 : 1))) {
    members[n.nodeId] = { incarnation: n.incarnation, role: n.role, weight: n.weight };
  }
  const restarted = (id: string): boolean => {
    const before = comparable ? prev.members[id] : undefined;
    return before !== undefined && before.incarnation !== members[id]?.incarnation;
  };

  const cells: Record<string, CellPlacement> = {};
  const moves: CellMove[] = [];
  for (const c of allCells(spec)) {
    const id = cellId(c);
    const before = comparable ? prev.cells[id] : undefined;
    const chosen = chooseReplicaSet(id, nodes, replicationFactor);
    const replicas = orderReplicaSet(before?.replicas, chosen, (n) => roles.get(n));
    const unchanged =
      before !== undefined && sameList(before.replicas, replicas) && !replicas.some(restarted);
    cells[id] = unchanged ? { replicas: before.replicas, epoch: before.epoch } : { replicas, epoch };
    if (!unchanged) moves.push({ cell: id, from: prev?.cells[id]?.replicas ?? [], to: replicas });
  }

  const changed =
    prev === undefined ||
    moves.length > 0 ||
    !comparable ||
    prev.replicationFactor !== replicationFactor ||
    JSON.stringify(prev.members) !== JSON.stringify(members);
  const table: PlacementTable = {
    epoch,
    term: input.term,
    leaderId: input.leaderId,
    spec: { ...spec },
    replicationFactor,
    cells,
    members,
    reason: input.reason,
    updatedAt: input.nowWallMs,
  };
  return { table, moves, changed };
}
