/**
 * Pure logic of replication: BlockStore's cell (s) and hot-copy bookkeeping, drop() with leases,
 * and the hot-chunk tracker (sliding-window rate, copy targets, cooling with hysteresis).
 */
import { describe, expect, it } from 'vitest';
import { BlockStore, type SlotAllocator } from '../../services/shard-node/block-store.js';
import { HotTracker } from '../../services/shard-node/hot-copies.js';

class ListAllocator implements SlotAllocator {
  private readonly freeList: number[];
  readonly used = new Set<number>();
  constructor(readonly capacity: number) {
    this.freeList = Array.from({ length: capacity }, (_, i) => capacity - 1 - i);
  }
  get free(): number {
    return this.freeList.length;
  }
  alloc(): number {
    const i = this.freeList.pop();
    if (i === undefined) throw new Error('full');
    this.used.add(i);
    return i;
  }
  release(i: number): void {
    if (!this.used.delete(i)) throw new Error(`double free ${i}`);
    this.freeList.push(i);
  }
}

function store(capacity = 4) {
  const allocator = new ListAllocator(capacity);
  const st = new BlockStore({ allocator, checksumOf: () => 7, clock: () => 1000 });
  const put = (hash: string, extra: { s?: number; hot?: boolean } = {}): void => {
    const { allocId, results } = st.allocate([{ hash, g: 0, chunkIndex: 0, parent: '', ...extra }]);
    expect(results[0]?.status).toBe('allocated');
    expect(st.commit(allocId, [{ hash, g: 0, checksum: 7 }])[0]?.status).toBe('committed');
  };
  return { st, allocator, put };
}

describe('BlockStore replication bookkeeping', () => {
  it('remembers each block’s sequence bucket and hot flag; keep() turns a hot copy into a block', () => {
    const { st, put } = store();
    put('a', { s: 3 });
    put('b', { hot: true });
    expect(st.get('a', 0)).toMatchObject({ s: 3, hot: false, checksum: 7 });
    expect(st.get('b', 0)).toMatchObject({ s: undefined, hot: true });
    st.keep('b', 0, 5);
    expect(st.get('b', 0)).toMatchObject({ s: 5, hot: false });
    expect([...st.blocks()].map((b) => b.hash).sort()).toEqual(['a', 'b']);
  });

  it('drop() removes a block at once and frees its slot, after the last lease when leased', () => {
    const { st, allocator, put } = store();
    put('a');
    put('b');
    expect(allocator.used.size).toBe(2);
    expect(st.drop('a', 0)).toBe(true);
    expect(st.has('a', 0)).toBe(false);
    expect(allocator.used.size).toBe(1);
    expect(st.drop('a', 0)).toBe(false);

    const lease = st.locate([{ hash: 'b', g: 0 }]);
    expect(lease.leaseId).not.toBeNull();
    expect(st.drop('b', 0)).toBe(true);
    expect(st.locate([{ hash: 'b', g: 0 }]).blocks[0]).toBeNull(); // no new reader finds it
    expect(allocator.used.size).toBe(1); // slot still held by the reader's lease
    expect(st.release(lease.leaseId as string)).toBe(true);
    expect(allocator.used.size).toBe(0);
  });

  it('evicted blocks carry their cell bucket and hot flag (the node filters index removals by them)', () => {
    const evicted: { hash: string; s: number | undefined; hot: boolean }[] = [];
    const allocator = new ListAllocator(1);
    const st = new BlockStore({
      allocator,
      checksumOf: () => 1,
      clock: () => 0,
      onEvict: (b) => evicted.push(...b),
    });
    const a = st.allocate([{ hash: 'h1', g: 0, chunkIndex: 0, parent: '', s: 2, hot: true }]);
    st.commit(a.allocId, [{ hash: 'h1', g: 0, checksum: 1 }]);
    st.allocate([{ hash: 'h2', g: 0, chunkIndex: 0, parent: '', s: 4 }]);
    expect(evicted).toMatchObject([{ hash: 'h1', s: 2, hot: true }]);
  });
});

describe('HotTracker', () => {
  const opts = { hotReadsPerSec: 10, copiesMax: 2, coolMs: 1000, windowMs: 1000 };

  it('measures a sliding-window rate', () => {
    const t = new HotTracker(opts);
    for (let i = 0; i < 20; i++) t.hit('k', 1000 + i * 10); // 20 hits in 0.2 s of window [1000, 2000)
    expect(t.rate('k', 1200)).toBe(20);
    // Half-way through the next window, half of the previous window still counts.
    expect(t.rate('k', 2500)).toBeCloseTo(10, 5);
    expect(t.rate('k', 4000)).toBe(0);
  });

  it('asks for copies only when hot, up to copiesMax, never twice to one node', () => {
    const t = new HotTracker(opts);
    expect(t.wantCopies('k', 5, 1000, ['n1', 'n2', 'n3'])).toEqual([]);
    expect(t.wantCopies('k', 10, 1000, ['n1', 'n2', 'n3'])).toEqual(['n1', 'n2']);
    expect(t.wantCopies('k', 50, 1001, ['n1', 'n2', 'n3'])).toEqual([]); // two pushes in flight
    t.pushed('k', 'n1', true);
    t.pushed('k', 'n2', false); // refused: may be retried elsewhere
    expect(t.copiesOf('k')).toEqual(['n1']);
    expect(t.wantCopies('k', 50, 1002, ['n2', 'n3'])).toEqual(['n2']);
    t.pushed('k', 'n2', true);
    expect(t.copiesOf('k').sort()).toEqual(['n1', 'n2']);
    expect(t.hotBlocks).toBe(1);
    t.forgetNode('n1');
    expect(t.copiesOf('k')).toEqual(['n2']);
  });

  it('cools a block only after its rate stayed below half the threshold for coolMs', () => {
    const t = new HotTracker(opts);
    for (let i = 0; i < 15; i++) t.hit('k', 1000 + i);
    expect(t.wantCopies('k', t.rate('k', 1020), 1020, ['n1'])).toEqual(['n1']);
    t.pushed('k', 'n1', true);
    expect(t.cooled(1500)).toEqual([]); // still warm
    // Warm readers keep it: 6/s is above half the threshold.
    for (let i = 0; i < 6; i++) t.hit('k', 2000 + i * 100);
    expect(t.cooled(2900)).toEqual([]);
    // Silence: below half from ~3000 on, cooled coolMs after the last warm moment.
    expect(t.cooled(3500)).toEqual([]);
    expect(t.cooled(4200)).toEqual([{ key: 'k', holders: ['n1'] }]);
    expect(t.copiesOf('k')).toEqual([]);
  });
});
