/**
 * Which copy of a block a read goes to, and where it fails over to. Pure (no I/O): unit-tested.
 *
 * A cell's ordered replica set is [primary, replica...]. Reads spread over the copies believed in
 * sync (the primary always; a replica unless it recently refused with NOT_IN_SYNC) plus the extra
 * read copies a locate reply listed for a hot block; the pick is rendezvous hashing on (cell or hot
 * block, a per-request salt), so one request touches about as many nodes as primary-only reads
 * and load spreads evenly across requests. Every other copy of the cell follows as a fallback in
 * table order: blocks are content-addressed and checksummed, so a copy that is not in sync can
 * only refuse or miss, never serve wrong bytes.
 */
import type { CellPlacement } from '../protocol/cluster.js';

/** FNV-1a over a string's UTF-16 code units, then a murmur3 finaliser. */
export function hash32(text: string, seed = 0): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let k = 0; k < text.length; k++) {
    h ^= text.charCodeAt(k);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b) >>> 0;
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35) >>> 0;
  h ^= h >>> 16;
  return h >>> 0;
}

/** Nodes in rendezvous (highest-random-weight) order for `key` under `salt`. */
export function rendezvousOrder(nodes: readonly string[], key: string, salt: number): string[] {
  const scored = nodes.map((n) => ({ n, w: hash32(`${key}\u0000${n}`, salt) }));
  scored.sort((a, b) => b.w - a.w || (a.n < b.n ? -1 : 1));
  return scored.map((x) => x.n);
}

/**
 * Replicas that recently refused a read of a cell with NOT_IN_SYNC (they are still backfilling or
 * missed a replicate): not spread to for `ttlMs`, still tried as a last resort. Bounded in size.
 */
export class SyncMemory {
  private readonly out = new Map<string, number>();

  constructor(
    private readonly ttlMs: number,
    private readonly entriesMax = 65_536,
    private readonly now: () => number = () => performance.now(),
  ) {}

  markOut(nodeId: string, cellId: string): void {
    const key = `${nodeId}\u0000${cellId}`;
    this.out.delete(key);
    this.out.set(key, this.now() + this.ttlMs);
    while (this.out.size > this.entriesMax) this.out.delete(this.out.keys().next().value as string);
  }

  isOut(nodeId: string, cellId: string): boolean {
    const key = `${nodeId}\u0000${cellId}`;
    const until = this.out.get(key);
    if (until === undefined) return false;
    if (until > this.now()) return true;
    this.out.delete(key);
    return false;
  }
}

/**
 * Nodes that recently failed a read, each until its TTL ends (or it answers again): later reads
 * try them last. A preference, never an exclusion: a node wrongly suspected still serves when it
 * is the only copy left.
 */
export class DownNodes {
  private readonly until = new Map<string, number>();

  constructor(
    private readonly ttlMs: number,
    private readonly now: () => number = () => performance.now(),
  ) {}

  mark(nodeId: string): void {
    if (this.ttlMs > 0) this.until.set(nodeId, this.now() + this.ttlMs);
  }

  clear(nodeId: string): void {
    this.until.delete(nodeId);
  }

  /** The nodes still suspected now. */
  current(): Set<string> {
    const t = this.now();
    const out = new Set<string>();
    for (const [n, u] of this.until) {
      if (u > t) out.add(n);
      else this.until.delete(n);
    }
    return out;
  }
}

export interface CopyChoiceInput {
  /** The block's cell record (undefined: the table has no such cell). */
  cell: CellPlacement | undefined;
  cellId: string;
  /** Extra read copies of this very block (hot), from an earlier locate reply. */
  hotExtras?: readonly string[];
  /** The block's own key (hash + group) for hot spreading. */
  blockKey: string;
  /** Per-request salt: different requests spread over different copies. */
  salt: number;
  /** false: primary first, replicas only as fallbacks (no spreading). @default true */
  spread?: boolean;
  /** Nodes known to be down or out of sync for this request (tried last, not dropped). */
  avoid?: ReadonlySet<string>;
  /** Replicas of this cell recently seen out of sync (not spread to; still fallbacks). */
  outOfSync?: (nodeId: string) => boolean;
}

/** Every copy to try for a block, best first; empty when the cell has no live node. */
export function readCandidates(input: CopyChoiceInput): string[] {
  const replicas = input.cell?.replicas ?? [];
  const primary = replicas[0];
  const extras = (input.hotExtras ?? []).filter((n) => !replicas.includes(n));
  if (primary === undefined) return [...new Set(extras)];
  const spread = input.spread ?? true;
  // The protocol lets reads go to any replica (one not in sync refuses with NOT_IN_SYNC), so every
  // replica counts as in sync until it refused; the primary always does.
  const inSync = replicas.filter((n, k) => k === 0 || input.outOfSync?.(n) !== true);
  let ordered: string[];
  if (!spread) {
    ordered = [primary, ...extras];
  } else if (extras.length > 0) {
    // A hot block: spread per block over every copy that has it.
    ordered = rendezvousOrder([...inSync, ...new Set(extras)], input.blockKey, input.salt);
  } else {
    // Per cell, so the blocks of one cell go to one node and a request stays one per node.
    ordered = rendezvousOrder(inSync, input.cellId, input.salt);
  }
  for (const n of replicas) if (!ordered.includes(n)) ordered.push(n);
  const avoid = input.avoid;
  if (avoid === undefined || avoid.size === 0) return ordered;
  return [...ordered.filter((n) => !avoid.has(n)), ...ordered.filter((n) => avoid.has(n))];
}

/**
 * Extra read copies of hot blocks that locate replies listed, per (model, hash, group), bounded
 * in count (oldest dropped) and in time (a copy is dropped when it cools on the node side; a
 * stale entry only costs a fallback).
 */
export class HotCopies {
  private readonly entries = new Map<string, { nodes: string[]; expiresAt: number }>();

  constructor(
    private readonly entriesMax: number,
    private readonly ttlMs: number,
    private readonly now: () => number = () => performance.now(),
  ) {}

  static key(model: string, hash: string, g: number): string {
    return `${model}\u0000${hash}\u0000${g}`;
  }

  note(key: string, nodes: readonly string[], ttlMs = this.ttlMs): void {
    if (this.entriesMax === 0) return;
    this.entries.delete(key);
    if (nodes.length === 0) return;
    this.entries.set(key, { nodes: [...nodes], expiresAt: this.now() + ttlMs });
    while (this.entries.size > this.entriesMax) {
      const oldest = this.entries.keys().next().value as string;
      this.entries.delete(oldest);
    }
  }

  extras(key: string): string[] {
    const e = this.entries.get(key);
    if (e === undefined) return [];
    if (e.expiresAt <= this.now()) {
      this.entries.delete(key);
      return [];
    }
    return e.nodes;
  }

  get size(): number {
    return this.entries.size;
  }
}
