/**
 * A seeded PRNG (mulberry32): every random choice of a chaos run comes from it, so a failing run
 * is replayed by its printed seed (timing aside: faults land where the scheduler puts them).
 */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  /** Uniform in [0, 1). */
  next(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** Uniform integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  pick<T>(xs: readonly T[]): T {
    if (xs.length === 0) throw new Error('Rng.pick: empty list');
    return xs[this.int(xs.length)] as T;
  }
  /** An independent stream derived from this one (per worker, per scenario). */
  fork(): Rng {
    return new Rng((this.int(0x7fffffff) ^ 0x5bd1e995) >>> 0);
  }
}
