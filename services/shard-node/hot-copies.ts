/**
 * Hot-chunk accounting (pure logic, unit-tested): locates per block over a sliding window, and
 * which blocks have extra read copies on which nodes.
 *
 * The rate is a sliding-window counter: the current window's count plus the previous window's,
 * weighted by how much of it still overlaps the sliding window. O(1) memory per block seen in the
 * last two windows; entries idle for two windows are forgotten.
 *
 * A block becomes hot when its rate reaches `hotReadsPerSec`; it gets copies (the caller pushes
 * them) up to `copiesMax`; it cools when its rate has stayed below half the threshold for
 * `coolMs` (hysteresis: a block hovering at the threshold does not flap).
 */

export interface HotTrackerOptions {
  /** Locates per second at which a block is hot. */
  hotReadsPerSec: number;
  /** Extra copies per hot block. */
  copiesMax: number;
  /** A hot block below half the threshold this long loses its copies. */
  coolMs: number;
  /** Width of the sliding window. @default 1000 */
  windowMs?: number;
}

interface Counter {
  windowStart: number;
  current: number;
  previous: number;
}

export interface HotBlock {
  /** Nodes holding a copy (confirmed). */
  copies: Set<string>;
  /** Nodes a push is in flight to. */
  pushing: Set<string>;
  /** Last time the rate was at or above half the threshold. */
  warmAtMs: number;
}

export class HotTracker {
  private readonly counters = new Map<string, Counter>();
  private readonly hot = new Map<string, HotBlock>();
  private readonly windowMs: number;

  constructor(private readonly o: HotTrackerOptions) {
    this.windowMs = o.windowMs ?? 1000;
  }

  /** Count one locate of `key` at `now`; returns the block's rate (locates per second). */
  hit(key: string, now: number): number {
    let c = this.counters.get(key);
    if (c === undefined) {
      c = { windowStart: now - (now % this.windowMs), current: 0, previous: 0 };
      this.counters.set(key, c);
    }
    this.roll(c, now);
    c.current++;
    const rate = this.rateOf(c, now);
    const h = this.hot.get(key);
    if (h !== undefined && rate >= this.o.hotReadsPerSec / 2) h.warmAtMs = now;
    return rate;
  }

  rate(key: string, now: number): number {
    const c = this.counters.get(key);
    if (c === undefined) return 0;
    this.roll(c, now);
    return this.rateOf(c, now);
  }

  /**
   * Nodes to push a new copy to: `candidates` (live nodes outside the block's replica set, in
   * preference order) minus holders and pushes in flight, up to copiesMax in all. Empty when the
   * block is not hot or has enough. Marks the returned nodes as pushing.
   */
  wantCopies(key: string, rate: number, now: number, candidates: readonly string[]): string[] {
    if (this.o.copiesMax <= 0 || rate < this.o.hotReadsPerSec) return [];
    let h = this.hot.get(key);
    if (h === undefined) {
      h = { copies: new Set(), pushing: new Set(), warmAtMs: now };
      this.hot.set(key, h);
    }
    h.warmAtMs = now;
    const room = this.o.copiesMax - h.copies.size - h.pushing.size;
    if (room <= 0) return [];
    const picked = candidates.filter((n) => !h.copies.has(n) && !h.pushing.has(n)).slice(0, room);
    for (const n of picked) h.pushing.add(n);
    return picked;
  }

  /** A push finished: ok adds the holder. */
  pushed(key: string, nodeId: string, ok: boolean): void {
    const h = this.hot.get(key);
    if (h === undefined) return;
    h.pushing.delete(nodeId);
    if (ok) h.copies.add(nodeId);
  }

  /** Confirmed holders of a block's copies (empty when none). */
  copiesOf(key: string): string[] {
    const h = this.hot.get(key);
    return h === undefined ? [] : [...h.copies];
  }

  /** Forget a holder (it left the cluster, or refused). */
  forgetNode(nodeId: string): void {
    for (const h of this.hot.values()) {
      h.copies.delete(nodeId);
      h.pushing.delete(nodeId);
    }
  }

  /** Blocks that cooled down (removed here): the caller tells their holders to drop them. */
  cooled(now: number): { key: string; holders: string[] }[] {
    const out: { key: string; holders: string[] }[] = [];
    for (const [key, h] of this.hot) {
      if (this.rate(key, now) >= this.o.hotReadsPerSec / 2) h.warmAtMs = now;
      if (now - h.warmAtMs < this.o.coolMs || h.pushing.size > 0) continue;
      this.hot.delete(key);
      out.push({ key, holders: [...h.copies] });
    }
    for (const [key, c] of this.counters) {
      if (!this.hot.has(key) && now - c.windowStart >= 2 * this.windowMs) this.counters.delete(key);
    }
    return out;
  }

  get hotBlocks(): number {
    let n = 0;
    for (const h of this.hot.values()) if (h.copies.size > 0) n++;
    return n;
  }

  private roll(c: Counter, now: number): void {
    const elapsed = now - c.windowStart;
    if (elapsed < this.windowMs) return;
    const windows = Math.floor(elapsed / this.windowMs);
    c.previous = windows === 1 ? c.current : 0;
    c.current = 0;
    c.windowStart += windows * this.windowMs;
  }

  private rateOf(c: Counter, now: number): number {
    const into = (now - c.windowStart) / this.windowMs;
    const count = c.current + c.previous * (1 - into);
    return (count * 1000) / this.windowMs;
  }
}
