/**
 * Cache simulators over a trace's block sequence (each request: its cacheable block ids in prompt
 * order). All three count hits the way a prefix cache serves them: a request's hit is the longest
 * run of leading blocks present when it arrives; then the worker stores the blocks it computed.
 *
 * - infinite: every block ever seen stays.
 * - lru: the shard node's policy (services/shard-node/block-store.ts) as one global store:
 *   a get touches the hit blocks, a put allocates the missing ones (evicting the least recently
 *   used committed block per slot) and commits them, touching each with its ancestors, later
 *   chunks first, so an earlier chunk is never older than a later one. Blocks already present
 *   are not touched by a put. What it does NOT model: the split over nodes (each node runs this
 *   LRU on its own share of the cells, so a full node evicts while another has room), TTLs and
 *   read leases. The bench measures the real fabric at a few capacities to show that gap.
 * - belady: the offline optimum (Belady's MIN): on a miss with the store full, evict the block
 *   whose next use is furthest away, or skip storing the new block when its own next use is the
 *   furthest. Since a block is only ever used together with its whole prefix, a later chunk's
 *   next use is never sooner than an earlier one's, so MIN keeps prefixes whole.
 */

export interface SimResult {
  /** Cached blocks served (sum of each request's leading hit blocks). */
  hitBlocks: number;
  /** Cacheable blocks requested. */
  totalBlocks: number;
  hitRate: number;
}

export type Sequences = readonly (readonly number[])[];

function result(hitBlocks: number, totalBlocks: number): SimResult {
  return { hitBlocks, totalBlocks, hitRate: totalBlocks === 0 ? 0 : hitBlocks / totalBlocks };
}

function leading(seq: readonly number[], has: (id: number) => boolean): number {
  let h = 0;
  while (h < seq.length && has(seq[h] as number)) h++;
  return h;
}

/** Distinct block ids: the working set, in blocks. */
export function workingSetBlocks(seqs: Sequences): number {
  const ids = new Set<number>();
  for (const s of seqs) for (const id of s) ids.add(id);
  return ids.size;
}

export function simulateInfinite(seqs: Sequences): SimResult {
  const seen = new Set<number>();
  let hits = 0;
  let total = 0;
  for (const seq of seqs) {
    hits += leading(seq, (id) => seen.has(id));
    total += seq.length;
    for (const id of seq) seen.add(id);
  }
  return result(hits, total);
}

/** The fabric's prefix-closed LRU with room for `capacityBlocks` blocks. */
export function simulateLru(seqs: Sequences, capacityBlocks: number): SimResult {
  if (!(capacityBlocks >= 1)) throw new RangeError('simulateLru: capacityBlocks must be >= 1');
  /** Committed blocks in eviction order: first = next victim. */
  const lru = new Map<number, true>();
  const touch = (ids: number[]): void => {
    for (const id of ids) {
      lru.delete(id);
      lru.set(id, true);
    }
  };
  let hits = 0;
  let total = 0;
  for (const seq of seqs) {
    const h = leading(seq, (id) => lru.has(id));
    hits += h;
    total += seq.length;
    // get: locate touches the hit blocks, later chunks first (so chunk 0 ends most recent).
    touch(seq.slice(0, h).reverse());
    // put, allocate: each missing block takes a slot, evicting the LRU committed block if none is free.
    const pending: number[] = [];
    const pendingSet = new Set<number>();
    for (let j = h; j < seq.length; j++) {
      const id = seq[j] as number;
      if (lru.has(id) || pendingSet.has(id)) continue;
      if (lru.size + pending.length >= capacityBlocks) {
        const victim = lru.keys().next();
        if (victim.done) break; // every slot is pending: 'full', the put is cut here
        lru.delete(victim.value);
      }
      pending.push(j);
      pendingSet.add(id);
    }
    // commit: the new blocks and their committed ancestors, touched later chunks first.
    const touched = new Set<number>();
    for (const j of pending) {
      lru.set(seq[j] as number, true);
    }
    for (let k = pending.length - 1; k >= 0; k--) {
      for (let i = pending[k] as number; i >= 0 && !touched.has(i); i--) {
        if (!lru.has(seq[i] as number)) break;
        touched.add(i);
      }
    }
    touch([...touched].sort((a, b) => b - a).map((i) => seq[i] as number));
  }
  return result(hits, total);
}

/** A max-heap of [key, id] with lazy deletion (entries whose key is no longer current are skipped). */
class MaxHeap {
  private readonly keys: number[] = [];
  private readonly ids: number[] = [];

  get size(): number {
    return this.keys.length;
  }

  push(key: number, id: number): void {
    let i = this.keys.length;
    this.keys.push(key);
    this.ids.push(id);
    while (i > 0) {
      const p = (i - 1) >> 1;
      if ((this.keys[p] as number) >= key) break;
      this.swap(i, p);
      i = p;
    }
  }

  peek(): [number, number] | undefined {
    return this.keys.length === 0 ? undefined : [this.keys[0] as number, this.ids[0] as number];
  }

  pop(): void {
    const last = this.keys.length - 1;
    this.swap(0, last);
    this.keys.pop();
    this.ids.pop();
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < this.keys.length && (this.keys[l] as number) > (this.keys[m] as number)) m = l;
      if (r < this.keys.length && (this.keys[r] as number) > (this.keys[m] as number)) m = r;
      if (m === i) return;
      this.swap(i, m);
      i = m;
    }
  }

  private swap(a: number, b: number): void {
    [this.keys[a], this.keys[b]] = [this.keys[b] as number, this.keys[a] as number];
    [this.ids[a], this.ids[b]] = [this.ids[b] as number, this.ids[a] as number];
  }
}

/** For every reference (flattened over requests), the position of the next reference to the same id. */
export function nextUses(seqs: Sequences): Float64Array {
  const total = seqs.reduce((n, s) => n + s.length, 0);
  const next = new Float64Array(total).fill(Number.POSITIVE_INFINITY);
  const later = new Map<number, number>();
  let p = total;
  for (let r = seqs.length - 1; r >= 0; r--) {
    const seq = seqs[r] as readonly number[];
    for (let j = seq.length - 1; j >= 0; j--) {
      p--;
      const id = seq[j] as number;
      const n = later.get(id);
      if (n !== undefined) next[p] = n;
      later.set(id, p);
    }
  }
  return next;
}

/** Belady's MIN with room for `capacityBlocks` blocks. */
export function simulateBelady(seqs: Sequences, capacityBlocks: number, next = nextUses(seqs)): SimResult {
  if (!(capacityBlocks >= 1)) throw new RangeError('simulateBelady: capacityBlocks must be >= 1');
  const cached = new Map<number, number>(); // id -> its next use (the heap key that is current)
  const heap = new MaxHeap();
  const furthest = (): [number, number] | undefined => {
    for (let top = heap.peek(); top; top = heap.peek()) {
      if (cached.get(top[1]) === top[0]) return top;
      heap.pop(); // stale: evicted, or re-keyed since
    }
    return undefined;
  };
  let hits = 0;
  let total = 0;
  let p = 0;
  for (const seq of seqs) {
    hits += leading(seq, (id) => cached.has(id));
    total += seq.length;
    for (const id of seq) {
      const nu = next[p++] as number;
      if (cached.has(id)) {
        cached.set(id, nu);
        heap.push(nu, id);
        continue;
      }
      if (cached.size >= capacityBlocks) {
        const top = furthest();
        if (!top || top[0] <= nu) continue; // the new block is the furthest: do not store it
        cached.delete(top[1]);
        heap.pop();
      }
      cached.set(id, nu);
      heap.push(nu, id);
    }
  }
  return result(hits, total);
}

export interface SweepPoint {
  /** Capacity as a fraction of the working set. */
  fraction: number;
  capacityBlocks: number;
  lru: number;
  belady: number;
  infinite: number;
  /** lru / belady (1 = as good as the offline optimum). */
  lruOverBelady: number;
}

/** Default sweep: 1% .. 100% of the working set. */
export const SWEEP_FRACTIONS = [0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1] as const;

export function capacitySweep(
  seqs: Sequences,
  fractions: readonly number[] = SWEEP_FRACTIONS,
  onPoint?: (done: number, total: number) => void,
): { workingSetBlocks: number; infinite: SimResult; points: SweepPoint[] } {
  const ws = workingSetBlocks(seqs);
  const infinite = simulateInfinite(seqs);
  const next = nextUses(seqs);
  const points = fractions.map((fraction, i) => {
    const capacityBlocks = Math.max(1, Math.ceil(fraction * ws));
    const lru = simulateLru(seqs, capacityBlocks).hitRate;
    const belady = simulateBelady(seqs, capacityBlocks, next).hitRate;
    onPoint?.(i + 1, fractions.length);
    return {
      fraction,
      capacityBlocks,
      lru,
      belady,
      infinite: infinite.hitRate,
      lruOverBelady: belady === 0 ? 1 : lru / belady,
    };
  });
  return { workingSetBlocks: ws, infinite, points };
}
