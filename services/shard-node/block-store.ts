/**
 * The shard node's block table: which (chunk hash, layer group) blocks live in which arena slot,
 * their lifecycle (allocated -> committed -> evicted), read leases, and eviction order.
 *
 * Pure logic: the arena is reached through `SlotAllocator` and checksums through a callback, and
 * time comes from an injected clock, so the state machine is unit-tested without I/O.
 *
 * Invariants:
 * - A block is readable (locate returns it) only after commit with a verified checksum.
 * - A block under a read lease or an in-flight write is never evicted or reused.
 * - Puts are idempotent by content: allocating a committed block answers `present`; a block being
 *   written by another allocation answers `busy`, so concurrent puts leave one copy.
 * - Eviction is LRU with a sliding TTL and prefix-closed as far as one node can make it: a touch
 *   re-inserts a prompt's chunks latest-first, so an earlier chunk is never older than a later one
 *   and among blocks touched together the later chunk is evicted first.
 */
import { KvfError } from '../../shared/errors.js';

export interface SlotAllocator {
  alloc(): number;
  release(index: number): void;
  readonly free: number;
  readonly capacity: number;
}

export interface BlockRef {
  hash: string;
  g: number;
}

export interface AllocateItem extends BlockRef {
  /** Position of the chunk in its prompt (0-based); orders eviction among blocks touched together. */
  chunkIndex: number;
  /** Hash of the previous chunk ('' for chunk 0): lets status find stranded blocks. */
  parent: string;
  /** Sequence bucket of the block's cell (replication lists and backfills blocks per cell). */
  s?: number;
  /** A hot read copy held for another node's block: evictable, never counted as a replica. */
  hot?: boolean;
}

export type AllocateResult =
  { status: 'allocated'; slot: number } | { status: 'present' } | { status: 'busy' } | { status: 'full' };

export type CommitResult =
  | { status: 'committed' }
  | { status: 'checksum_mismatch'; expected: number; actual: number }
  | { status: 'unknown' };

export interface LocatedBlock {
  slot: number;
  checksum: number;
}

/** A committed block as replication sees it. */
export interface StoredBlock extends BlockRef {
  chunkIndex: number;
  parent: string;
  s: number | undefined;
  slot: number;
  checksum: number;
  hot: boolean;
  leases: number;
  lastAccessMs: number;
}

export interface EvictedBlock extends BlockRef {
  chunkIndex: number;
  s: number | undefined;
  hot: boolean;
  reason: 'capacity' | 'ttl';
}

interface Block {
  key: string;
  hash: string;
  g: number;
  chunkIndex: number;
  parent: string;
  s: number | undefined;
  hot: boolean;
  slot: number;
  checksum: number;
  leases: number;
  lastAccessMs: number;
}

interface Allocation {
  id: string;
  deadlineMs: number;
  /** key -> slot of blocks this allocation is writing and has not yet committed or aborted. */
  pending: Map<string, { slot: number; item: AllocateItem }>;
}

interface Lease {
  id: string;
  deadlineMs: number;
  keys: string[];
}

export interface BlockStoreOptions {
  allocator: SlotAllocator;
  /**
   * crc32c of the bytes a client wrote into a slot for a block of layer group g (groups may have
   * different block sizes); compared with the writer's checksum.
   */
  checksumOf: (slot: number, g: number) => number;
  clock: () => number;
  /** Sliding TTL of a committed block since its last access. Default 24 h. */
  blockTtlMs?: number;
  /** A writer that has not committed within this time is presumed dead; its slots are reclaimed. */
  allocTimeoutMs?: number;
  /** How long a reader may hold a located block before it may be evicted under it. */
  readLeaseMs?: number;
  /** Called with blocks removed by eviction, so their index entries can be deleted. */
  onEvict?: (blocks: EvictedBlock[]) => void;
}

const keyOf = (hash: string, g: number): string => `${hash}:${g}`;

function snapshot(b: Block): StoredBlock {
  return {
    hash: b.hash,
    g: b.g,
    chunkIndex: b.chunkIndex,
    parent: b.parent,
    s: b.s,
    slot: b.slot,
    checksum: b.checksum,
    hot: b.hot,
    leases: b.leases,
    lastAccessMs: b.lastAccessMs,
  };
}

export class BlockStore {
  private readonly committed = new Map<string, Block>();
  /** Committed blocks in eviction order: first = next victim. Leased blocks stay listed but are skipped. */
  private readonly lru = new Map<string, Block>();
  private readonly writing = new Map<string, string>(); // key -> allocation id
  private readonly allocations = new Map<string, Allocation>();
  private readonly leases = new Map<string, Lease>();
  /** Dropped blocks whose slots wait for their leases to end. */
  private readonly draining = new Map<string, Block>();
  private nextId = 1;
  private readonly blockTtlMs: number;
  private readonly allocTimeoutMs: number;
  private readonly readLeaseMs: number;
  private evictedTotal = 0;

  constructor(private readonly opts: BlockStoreOptions) {
    this.blockTtlMs = opts.blockTtlMs ?? 24 * 3600 * 1000;
    this.allocTimeoutMs = opts.allocTimeoutMs ?? 30_000;
    this.readLeaseMs = opts.readLeaseMs ?? 10_000;
  }

  /** Reserve slots for a batch of blocks. One allocation id covers the whole batch. */
  allocate(items: AllocateItem[]): { allocId: string; results: AllocateResult[] } {
    this.sweep();
    const now = this.opts.clock();
    const alloc: Allocation = {
      id: `a${this.nextId++}`,
      deadlineMs: now + this.allocTimeoutMs,
      pending: new Map(),
    };
    const results: AllocateResult[] = [];
    const evicted: EvictedBlock[] = [];
    for (const item of items) {
      const key = keyOf(item.hash, item.g);
      if (this.committed.has(key)) {
        results.push({ status: 'present' });
      } else if (this.writing.has(key) || alloc.pending.has(key)) {
        results.push({ status: 'busy' });
      } else {
        const slot = this.takeSlot(evicted);
        if (slot === undefined) {
          results.push({ status: 'full' });
        } else {
          alloc.pending.set(key, { slot, item });
          this.writing.set(key, alloc.id);
          results.push({ status: 'allocated', slot });
        }
      }
    }
    if (alloc.pending.size > 0) this.allocations.set(alloc.id, alloc);
    if (evicted.length > 0) this.opts.onEvict?.(evicted);
    return { allocId: alloc.id, results };
  }

  /** The slot an allocation is writing a block into; undefined when the block is not pending there. */
  pendingSlot(allocId: string, hash: string, g: number): number | undefined {
    return this.allocations.get(allocId)?.pending.get(keyOf(hash, g))?.slot;
  }

  /**
   * Make written blocks readable after verifying the writer's checksums. A mismatching block is
   * freed and never becomes readable. Blocks of the allocation not listed stay pending.
   * `actualChecksums[k]`, when given, is item k's checksum as computed off the event
   * loop (Arena.checksums over pendingSlot) and replaces the synchronous checksumOf; the slot
   * cannot have changed hands meanwhile, because it stays pending until this call.
   */
  commit(
    allocId: string,
    items: (BlockRef & { checksum: number })[],
    actualChecksums?: readonly (number | undefined)[],
  ): CommitResult[] {
    const alloc = this.allocations.get(allocId);
    if (!alloc) {
      throw new KvfError('ALLOCATION_NOT_FOUND', `allocation ${allocId} is unknown or expired`, {
        details: { allocId },
      });
    }
    const now = this.opts.clock();
    const committedNow: Block[] = [];
    const results = items.map((it, k): CommitResult => {
      const key = keyOf(it.hash, it.g);
      const p = alloc.pending.get(key);
      if (!p) return { status: 'unknown' };
      alloc.pending.delete(key);
      this.writing.delete(key);
      const actual = (actualChecksums?.[k] ?? this.opts.checksumOf(p.slot, p.item.g)) >>> 0;
      if (actual !== it.checksum >>> 0) {
        this.opts.allocator.release(p.slot);
        return { status: 'checksum_mismatch', expected: it.checksum >>> 0, actual };
      }
      const block: Block = {
        key,
        hash: it.hash,
        g: it.g,
        chunkIndex: p.item.chunkIndex,
        parent: p.item.parent,
        s: p.item.s,
        hot: p.item.hot === true,
        slot: p.slot,
        checksum: actual,
        leases: 0,
        lastAccessMs: now,
      };
      this.committed.set(key, block);
      committedNow.push(block);
      return { status: 'committed' };
    });
    this.touchBlocks(committedNow, now);
    if (alloc.pending.size === 0) this.allocations.delete(allocId);
    return results;
  }

  /** Give back an allocation's uncommitted slots (a writer that failed mid-put). */
  abort(allocId: string): number {
    const alloc = this.allocations.get(allocId);
    if (!alloc) return 0;
    this.dropAllocation(alloc);
    return alloc.pending.size;
  }

  /**
   * Find committed blocks and lease them for reading. Missing blocks are null (the reader's hit is
   * shortened, never failed). Found blocks are touched, prefix-closed.
   */
  locate(refs: (BlockRef & { chunkIndex?: number })[]): {
    leaseId: string | null;
    leaseDeadlineMs: number;
    blocks: (LocatedBlock | null)[];
  } {
    this.sweep();
    const now = this.opts.clock();
    const found: Block[] = [];
    const blocks = refs.map((r) => {
      const b = this.committed.get(keyOf(r.hash, r.g));
      if (!b) return null;
      found.push(b);
      return { slot: b.slot, checksum: b.checksum };
    });
    const deadline = now + this.readLeaseMs;
    if (found.length === 0) return { leaseId: null, leaseDeadlineMs: deadline, blocks };
    for (const b of found) b.leases++;
    const lease: Lease = { id: `l${this.nextId++}`, deadlineMs: deadline, keys: found.map((b) => b.key) };
    this.leases.set(lease.id, lease);
    this.touchBlocks(found, now);
    return { leaseId: lease.id, leaseDeadlineMs: deadline, blocks };
  }

  /** End a read lease early. Unknown (already expired) leases are fine: release is idempotent. */
  release(leaseId: string): boolean {
    const lease = this.leases.get(leaseId);
    if (!lease) return false;
    this.dropLease(lease);
    return true;
  }

  /** Expire dead writers' allocations, lapsed leases and blocks past their TTL. */
  sweep(): void {
    const now = this.opts.clock();
    for (const a of this.allocations.values()) if (a.deadlineMs <= now) this.dropAllocation(a);
    for (const l of this.leases.values()) if (l.deadlineMs <= now) this.dropLease(l);
    const expired: EvictedBlock[] = [];
    for (const b of this.lru.values()) {
      // lru is in access order, so the first unexpired block ends the scan... except leased ones.
      if (b.lastAccessMs + this.blockTtlMs > now) break;
      if (b.leases > 0) continue;
      this.removeBlock(b);
      expired.push({ hash: b.hash, g: b.g, chunkIndex: b.chunkIndex, s: b.s, hot: b.hot, reason: 'ttl' });
    }
    if (expired.length > 0) this.opts.onEvict?.(expired);
  }

  has(hash: string, g: number): boolean {
    return this.committed.has(keyOf(hash, g));
  }

  /** A committed block (a snapshot), or undefined. */
  get(hash: string, g: number): StoredBlock | undefined {
    const b = this.committed.get(keyOf(hash, g));
    return b === undefined ? undefined : snapshot(b);
  }

  /** Committed blocks, in insertion order of the table (snapshots). */
  *blocks(): IterableIterator<StoredBlock> {
    for (const b of this.committed.values()) yield snapshot(b);
  }

  /**
   * Remove a committed block now (a corrupt block, a cooled hot copy). A leased block is removed
   * from the table at once (no new reader finds it) but its slot is freed only when the last lease
   * ends, so a reader mid-transfer never reads a reused slot. Returns false when absent.
   */
  drop(hash: string, g: number): boolean {
    const b = this.committed.get(keyOf(hash, g));
    if (b === undefined) return false;
    this.committed.delete(b.key);
    this.lru.delete(b.key);
    if (b.leases > 0) this.draining.set(b.key + '#' + String(this.nextId++), b);
    else this.opts.allocator.release(b.slot);
    return true;
  }

  /** Turn a hot copy into an ordinary block (the node became a replica of its cell). */
  keep(hash: string, g: number, s: number | undefined): void {
    const b = this.committed.get(keyOf(hash, g));
    if (b === undefined) return;
    b.hot = false;
    if (s !== undefined) b.s = s;
  }

  /** Committed blocks with their parent links, for stranded-bytes accounting. */
  *entries(): IterableIterator<{ hash: string; g: number; chunkIndex: number; parent: string }> {
    for (const b of this.committed.values())
      yield { hash: b.hash, g: b.g, chunkIndex: b.chunkIndex, parent: b.parent };
  }

  stats(): {
    committedBlocks: number;
    writingBlocks: number;
    leasedBlocks: number;
    activeLeases: number;
    activeAllocations: number;
    freeSlots: number;
    capacitySlots: number;
    evictedTotal: number;
  } {
    let leased = 0;
    for (const b of this.committed.values()) if (b.leases > 0) leased++;
    return {
      committedBlocks: this.committed.size,
      writingBlocks: this.writing.size,
      leasedBlocks: leased,
      activeLeases: this.leases.size,
      activeAllocations: this.allocations.size,
      freeSlots: this.opts.allocator.free,
      capacitySlots: this.opts.allocator.capacity,
      evictedTotal: this.evictedTotal,
    };
  }

  /** Eviction order as keys, first = next victim (for tests and status). */
  evictionOrder(): string[] {
    return [...this.lru.keys()];
  }

  private takeSlot(evicted: EvictedBlock[]): number | undefined {
    if (this.opts.allocator.free === 0) {
      const victim = this.pickVictim();
      if (!victim) return undefined;
      this.removeBlock(victim);
      evicted.push({
        hash: victim.hash,
        g: victim.g,
        chunkIndex: victim.chunkIndex,
        s: victim.s,
        hot: victim.hot,
        reason: 'capacity',
      });
    }
    return this.opts.allocator.alloc();
  }

  private pickVictim(): Block | undefined {
    for (const b of this.lru.values()) if (b.leases === 0) return b;
    return undefined;
  }

  private removeBlock(b: Block): void {
    this.committed.delete(b.key);
    this.lru.delete(b.key);
    this.opts.allocator.release(b.slot);
    this.evictedTotal++;
  }

  /**
   * Move blocks, and their ancestors held on this node, to the most-recent end, later chunks
   * first, so that an earlier chunk is never older than a later one: LRU then evicts a prompt's
   * tail before its head. Walking the parent chain matters when a put commits chunk i after
   * chunk i-1 was merely found present: without it chunk i would become the newer of the two.
   */
  private touchBlocks(blocks: Block[], now: number): void {
    const set = new Map<string, Block>();
    for (const b of blocks) {
      let cur: Block | undefined = b;
      while (cur && !set.has(cur.key)) {
        set.set(cur.key, cur);
        cur = cur.parent ? this.committed.get(keyOf(cur.parent, cur.g)) : undefined;
      }
    }
    const ordered = [...set.values()].sort((a, b) => b.chunkIndex - a.chunkIndex);
    for (const b of ordered) {
      b.lastAccessMs = now;
      this.lru.delete(b.key);
      this.lru.set(b.key, b);
    }
  }

  private dropAllocation(a: Allocation): void {
    for (const [key, p] of a.pending) {
      this.writing.delete(key);
      this.opts.allocator.release(p.slot);
    }
    this.allocations.delete(a.id);
  }

  private dropLease(l: Lease): void {
    for (const k of l.keys) {
      const b = this.committed.get(k);
      if (b && b.leases > 0) b.leases--;
    }
    this.leases.delete(l.id);
    if (this.draining.size === 0) return;
    for (const [dk, b] of this.draining) {
      if (!l.keys.includes(b.key) || b.leases === 0) continue;
      b.leases--;
      if (b.leases === 0) {
        this.draining.delete(dk);
        this.opts.allocator.release(b.slot);
      }
    }
  }
}
