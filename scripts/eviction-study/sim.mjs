// Eviction study: online eviction/admission policies (LRU, 2Q, SLRU, S3-FIFO, ARC, LFU-DA, LRU-2,
// LRFU, LHD, ...) and oracle bounds on the Mooncake prefix-cache trace, against Belady's MIN.
// Hit counting identical to services/cli/bench/simulate.ts (whose compiled JS it imports: run
// `npm run build` first). Results and conclusions: docs/benchmarks.md, "Eviction study".
// Usage: node scripts/eviction-study/final.mjs [trace.jsonl]   (about 10 s per policy row)
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadTrace, blockSequences } from '../../dist/services/cli/bench/trace.js';
import {
  simulateInfinite,
  simulateLru,
  simulateBelady,
  workingSetBlocks,
  nextUses,
} from '../../dist/services/cli/bench/simulate.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const TRACE = process.argv[2] ?? path.resolve(here, '../../../shared/traces/mooncake_synthetic_trace.jsonl');
export const seqs = blockSequences(loadTrace(TRACE));
export const WS = workingSetBlocks(seqs);
export const FRACS = [0.01, 0.05, 0.1, 0.2, 0.5, 1];
export const cap = (f) => Math.max(1, Math.ceil(f * WS));

/** Generic harness. Policy interface:
 *  has(id); size; onGet(seq, h) (hit blocks seq[0..h)); allocate(id, j, seq) -> bool (make room for
 *  one new block, may evict; false = refuse: the put is cut here); commit(seq, pendingIdx, h). */
export function run(policy) {
  let hits = 0,
    total = 0;
  for (const seq of seqs) {
    let h = 0;
    while (h < seq.length && policy.has(seq[h])) h++;
    hits += h;
    total += seq.length;
    policy.onGet(seq, h);
    const pending = [];
    const ps = new Set();
    for (let j = h; j < seq.length; j++) {
      const id = seq[j];
      if (policy.has(id) || ps.has(id)) continue;
      if (!policy.allocate(id, j, seq, pending.length)) break;
      pending.push(j);
      ps.add(id);
    }
    policy.commit(seq, pending, h);
  }
  return hits / total;
}

// ---------- helpers ----------
const mru = (m, id, v = true) => {
  m.delete(id);
  m.set(id, v);
};
const first = (m) => {
  const it = m.keys().next();
  return it.done ? undefined : it.value;
};
/** indices of committed ancestors of the pending blocks (as simulateLru), later first */
function ancestors(seq, pending, has) {
  const touched = new Set();
  for (let k = pending.length - 1; k >= 0; k--)
    for (let i = pending[k]; i >= 0 && !touched.has(i); i--) {
      if (!has(seq[i])) break;
      touched.add(i);
    }
  return [...touched].sort((a, b) => b - a);
}

// ---------- LRU (reference, should equal simulateLru) ----------
export function LRU(C) {
  const lru = new Map();
  return {
    has: (id) => lru.has(id),
    onGet(seq, h) {
      for (let i = h - 1; i >= 0; i--) mru(lru, seq[i]);
    },
    allocate(id, j, seq, npend) {
      if (lru.size + npend < C) return true;
      const v = first(lru);
      if (v === undefined) return false;
      lru.delete(v);
      return true;
    },
    commit(seq, pending) {
      for (const j of pending) lru.set(seq[j], true);
      for (const i of ancestors(seq, pending, (id) => lru.has(id))) mru(lru, seq[i]);
    },
  };
}

// ---------- 2Q / SLRU with ghost ----------
// prob: LRU of blocks not yet hit since insert; main: LRU of blocks hit (or re-admitted from ghost).
// opts: pFrac (probation target share), ghostFrac (ghost size / C), demote (main overflow -> prob MRU),
// promoteOnGhost (re-inserted ghost ids go to main).
export function TwoQ(C, { pFrac = 0.25, ghostFrac = 1, demote = false, promoteOnGhost = true } = {}) {
  const prob = new Map(),
    main = new Map(),
    ghost = new Map();
  const G = Math.floor(ghostFrac * C);
  const has = (id) => prob.has(id) || main.has(id);
  const toGhost = (id) => {
    if (G <= 0) return;
    ghost.delete(id);
    ghost.set(id, true);
    if (ghost.size > G) ghost.delete(first(ghost));
  };
  const evictOne = () => {
    for (;;) {
      if (prob.size > 0 && (prob.size >= pFrac * C || main.size === 0)) {
        const v = first(prob);
        prob.delete(v);
        toGhost(v);
        return true;
      }
      if (main.size === 0) return false;
      const v = first(main);
      main.delete(v);
      if (demote) {
        prob.set(v, true);
        continue;
      } // demoted to prob MRU... loop evicts from prob
      toGhost(v);
      return true;
    }
  };
  return {
    has,
    onGet(seq, h) {
      for (let i = h - 1; i >= 0; i--) {
        const id = seq[i];
        prob.delete(id);
        mru(main, id);
      }
    },
    allocate(id, j, seq, npend) {
      if (prob.size + main.size + npend < C) return true;
      return evictOne();
    },
    commit(seq, pending) {
      for (let k = pending.length - 1; k >= 0; k--) {
        const id = seq[pending[k]];
        if (promoteOnGhost && ghost.has(id)) {
          ghost.delete(id);
          main.set(id, true);
        } else prob.set(id, true);
      }
    },
  };
}

// ---------- S3-FIFO ----------
export function S3FIFO(C, { sFrac = 0.1, ghostFrac = 0.9, fmax = 3 } = {}) {
  const S = new Map(),
    M = new Map(),
    G = new Map(); // id -> freq
  const Gmax = Math.floor(ghostFrac * C);
  const has = (id) => S.has(id) || M.has(id);
  const toGhost = (id) => {
    G.delete(id);
    G.set(id, true);
    if (G.size > Gmax) G.delete(first(G));
  };
  const evictM = () => {
    for (;;) {
      const v = first(M);
      if (v === undefined) return false;
      const f = M.get(v);
      M.delete(v);
      if (f > 0) M.set(v, f - 1);
      else return true;
    }
  };
  const evictS = () => {
    while (S.size > 0) {
      const v = first(S);
      const f = S.get(v);
      S.delete(v);
      if (f > 0) {
        M.set(v, 0);
        if (M.size > C - sFrac * C) {
          if (evictM()) return true;
        }
      } else {
        toGhost(v);
        return true;
      }
    }
    return evictM();
  };
  return {
    has,
    onGet(seq, h) {
      for (let i = h - 1; i >= 0; i--) {
        const id = seq[i];
        if (S.has(id)) S.set(id, Math.min(fmax, S.get(id) + 1));
        else M.set(id, Math.min(fmax, M.get(id) + 1));
      }
    },
    allocate(id, j, seq, npend) {
      if (S.size + M.size + npend < C) return true;
      if (S.size >= sFrac * C || M.size === 0) return evictS();
      return evictM();
    },
    commit(seq, pending) {
      for (let k = pending.length - 1; k >= 0; k--) {
        const id = seq[pending[k]];
        if (G.has(id)) {
          G.delete(id);
          M.set(id, 0);
        } else S.set(id, 0);
      }
    },
  };
}

// ---------- ARC ----------
export function ARC(C) {
  const T1 = new Map(),
    T2 = new Map(),
    B1 = new Map(),
    B2 = new Map();
  let p = 0;
  const inB = new Map(); // pending id -> 1|2
  const has = (id) => T1.has(id) || T2.has(id);
  const replace = (inB2) => {
    if (T1.size > 0 && (T1.size > p || (inB2 && T1.size === p) || T2.size === 0)) {
      const v = first(T1);
      T1.delete(v);
      B1.set(v, true);
    } else if (T2.size > 0) {
      const v = first(T2);
      T2.delete(v);
      B2.set(v, true);
    } else return false;
    return true;
  };
  return {
    has,
    onGet(seq, h) {
      for (let i = h - 1; i >= 0; i--) {
        const id = seq[i];
        T1.delete(id);
        mru(T2, id);
      }
    },
    allocate(id, j, seq, npend) {
      const used = T1.size + T2.size + npend;
      if (B1.has(id)) {
        p = Math.min(C, p + Math.max(B2.size / B1.size, 1));
        B1.delete(id);
        inB.set(id, 2);
        return used < C || replace(false);
      }
      if (B2.has(id)) {
        p = Math.max(0, p - Math.max(B1.size / B2.size, 1));
        B2.delete(id);
        inB.set(id, 2);
        return used < C || replace(true);
      }
      inB.set(id, 1);
      const L1 = T1.size + B1.size;
      if (L1 >= C) {
        if (T1.size < C) {
          B1.delete(first(B1));
          return used < C || replace(false);
        }
        const v = first(T1);
        T1.delete(v);
        return true;
      }
      const tot = L1 + T2.size + B2.size + npend;
      if (tot >= C) {
        if (tot >= 2 * C && B2.size) B2.delete(first(B2));
        return used < C || replace(false);
      }
      return true;
    },
    commit(seq, pending) {
      for (let k = pending.length - 1; k >= 0; k--) {
        const id = seq[pending[k]];
        if (inB.get(id) === 2) T2.set(id, true);
        else T1.set(id, true);
      }
      inB.clear();
    },
  };
}

// ---------- min-heap with lazy deletion ----------
export class MinHeap {
  constructor() {
    this.k = [];
    this.v = [];
  }
  get size() {
    return this.k.length;
  }
  push(key, id) {
    const k = this.k,
      v = this.v;
    let i = k.length;
    k.push(key);
    v.push(id);
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (k[p] <= key) break;
      k[i] = k[p];
      v[i] = v[p];
      i = p;
    }
    k[i] = key;
    v[i] = id;
  }
  pop() {
    const k = this.k,
      v = this.v;
    const lk = k.pop(),
      lv = v.pop();
    if (k.length === 0) return;
    let i = 0;
    const n = k.length;
    for (;;) {
      const l = 2 * i + 1,
        r = l + 1;
      let m = i,
        mk = lk;
      if (l < n && k[l] < mk) {
        m = l;
        mk = k[l];
      }
      if (r < n && k[r] < mk) {
        m = r;
      }
      if (m === i) break;
      k[i] = k[m];
      v[i] = v[m];
      i = m;
    }
    k[i] = lk;
    v[i] = lv;
  }
}

// ---------- LFU with dynamic aging (LFU-DA / GreedyDual style) ----------
// priority = L + freq(+ eps*tie); evict min; L := evicted priority. Tie: deeper chunk first, then older.
// opts: ghostFreq: remember freq of evicted ids in a bounded ghost (restored on re-insert).
export function LFUDA(C, { ghostFrac = 0, inc = 1, init = 1 } = {}) {
  const meta = new Map(); // id -> {f, key}
  const heap = new MinHeap();
  let L = 0,
    clock = 0;
  const ghost = new Map();
  const G = Math.floor(ghostFrac * C);
  // key: priority major, then depth (deeper first => smaller key), then recency
  const keyOf = (pr, depth) => pr * 1e9 - depth * 1e6 + (++clock % 1e6) * 0; // recency by heap order not needed
  const setKey = (id, m, depth) => {
    m.pr = L + m.f;
    m.key = m.pr * 1024 - Math.min(depth, 1023);
    m.seq = ++clock;
    heap.push(m.key + (m.seq / 1e12) * 0, id);
  };
  const has = (id) => meta.has(id);
  const evictOne = () => {
    while (heap.size) {
      const id = heap.v[0],
        key = heap.k[0];
      const m = meta.get(id);
      heap.pop();
      if (!m || m.key !== key) continue;
      meta.delete(id);
      L = m.pr;
      if (G > 0) {
        ghost.delete(id);
        ghost.set(id, m.f);
        if (ghost.size > G) ghost.delete(first(ghost));
      }
      return true;
    }
    return false;
  };
  return {
    has,
    onGet(seq, h) {
      for (let i = h - 1; i >= 0; i--) {
        const m = meta.get(seq[i]);
        m.f += inc;
        setKey(seq[i], m, i);
      }
    },
    allocate(id, j, seq, npend) {
      if (meta.size + npend < C) return true;
      return evictOne();
    },
    commit(seq, pending) {
      for (let k = pending.length - 1; k >= 0; k--) {
        const j = pending[k],
          id = seq[j];
        let f = init;
        if (ghost.has(id)) {
          f = ghost.get(id) + inc;
          ghost.delete(id);
        }
        const m = { f };
        meta.set(id, m);
        setKey(id, m, j);
      }
    },
  };
}

// ---------- baseline numbers ----------
export function baselines() {
  const next = nextUses(seqs);
  const inf = simulateInfinite(seqs).hitRate;
  const out = {};
  for (const f of FRACS)
    out[f] = { lru: simulateLru(seqs, cap(f)).hitRate, bel: simulateBelady(seqs, cap(f), next).hitRate, inf };
  return out;
}

export function report(name, make, base) {
  const row = FRACS.map((f) => run(make(cap(f))));
  const s = FRACS.map((f, i) => `${(row[i] * 100).toFixed(2)} (${(row[i] / base[f].bel).toFixed(2)})`).join(
    ' | ',
  );
  console.log(`${name.padEnd(40)} ${s}`);
  return row;
}

// ---------- generic "history" policy: per-block stats, eviction by a score ----------
// stats: f (refs), first, last (request index), prev (previous ref time), depth.
// mode 'heap': score must be fixed between accesses of the block (key computed at access).
// mode 'sample': score(m, now) evaluated at eviction time over `k` random resident blocks (Redis-like).
// ghost: bounded FIFO of evicted ids' stats, restored when the id is re-inserted.
export function Hist(C, { score, mode = 'heap', k = 16, ghostFrac = 2, seed = 1 } = {}) {
  const meta = new Map();
  const ghost = new Map();
  const G = Math.floor(ghostFrac * C);
  const heap = new MinHeap();
  let now = 0;
  let ver = 0;
  const arr = []; // resident ids for sampling
  let rng = seed >>> 0;
  const rand = () => {
    rng ^= rng << 13;
    rng >>>= 0;
    rng ^= rng >>> 17;
    rng ^= rng << 5;
    rng >>>= 0;
    return rng / 4294967296;
  };
  const push = (id, m) => {
    if (mode === 'heap') {
      m.key = score(m, now) - m.depth * 1e-9 + ++ver * 1e-15;
      heap.push(m.key, id);
    }
  };
  const remove = (id, m) => {
    meta.delete(id);
    if (mode === 'sample') {
      const last = arr.pop();
      if (last !== id) {
        arr[m.ix] = last;
        meta.get(last).ix = m.ix;
      }
    }
    if (G > 0) {
      ghost.delete(id);
      ghost.set(id, m);
      if (ghost.size > G) ghost.delete(first(ghost));
    }
  };
  const evictOne = () => {
    if (mode === 'heap') {
      while (heap.size) {
        const id = heap.v[0],
          key = heap.k[0];
        heap.pop();
        const m = meta.get(id);
        if (!m || m.key !== key) continue;
        remove(id, m);
        return true;
      }
      return false;
    }
    if (arr.length === 0) return false;
    let best,
      bm,
      bs = Infinity;
    for (let i = 0; i < k; i++) {
      const id = arr[Math.floor(rand() * arr.length)];
      const m = meta.get(id);
      const s = score(m, now) - m.depth * 1e-9 - m.last * 1e-12;
      if (s < bs) {
        bs = s;
        best = id;
        bm = m;
      }
    }
    remove(best, bm);
    return true;
  };
  const access = (id, m) => {
    m.prev = m.last;
    m.last = now;
    m.f++;
    push(id, m);
  };
  return {
    has: (id) => meta.has(id),
    onGet(seq, h) {
      now++;
      for (let i = h - 1; i >= 0; i--) access(seq[i], meta.get(seq[i]));
    },
    allocate(id, j, seq, npend) {
      if (meta.size + npend < C) return true;
      return evictOne();
    },
    commit(seq, pending) {
      for (let q = pending.length - 1; q >= 0; q--) {
        const j = pending[q],
          id = seq[j];
        let m = ghost.get(id);
        if (m) ghost.delete(id);
        else m = { f: 0, first: now, last: -1, prev: -1, depth: j };
        meta.set(id, m);
        if (mode === 'sample') {
          m.ix = arr.length;
          arr.push(id);
        }
        access(id, m);
      }
    },
  };
}

// ---------- LHD (least hit density, Beckmann NSDI'18) adapted: ages in requests ----------
// classes by refs so far (capped); age buckets of width W; HD table rebuilt every `every` requests
// from decayed hit/eviction-age histograms; eviction by sampling k resident blocks, min HD.
// admit: refuse a new block (cut the put) when its HD at age 0 is below the sampled victim's.
export function LHD(
  C,
  {
    W = 8,
    NB = 512,
    classes = [1, 2, 3, 4, 6, 10],
    k = 32,
    every = 50,
    decay = 0.9,
    ghostFrac = 2,
    admit = false,
    seed = 7,
    classOf = null,
    noteHit = null,
  } = {},
) {
  const NC = classes.length;
  const cls =
    classOf ||
    ((m) => {
      let c = 0;
      while (c + 1 < NC && m.f >= classes[c + 1]) c++;
      return c;
    });
  const H = Array.from({ length: NC }, () => new Float64Array(NB)),
    E = Array.from({ length: NC }, () => new Float64Array(NB));
  const HD = Array.from({ length: NC }, (_, c) => {
    const a = new Float64Array(NB);
    for (let i = 0; i < NB; i++) a[i] = (c + 1) / (i + 1);
    return a;
  }); // prior: more refs and younger = better
  const meta = new Map(),
    ghost = new Map(),
    G = Math.floor(ghostFrac * C),
    arr = [];
  let now = 0;
  let rng = seed >>> 0;
  const rand = () => {
    rng ^= rng << 13;
    rng >>>= 0;
    rng ^= rng >>> 17;
    rng ^= rng << 5;
    rng >>>= 0;
    return rng / 4294967296;
  };
  const ageB = (m) => Math.min(NB - 1, Math.floor((now - m.last) / W));
  const hd = (m) => HD[cls(m)][ageB(m)];
  const rebuild = () => {
    for (let c = 0; c < NC; c++) {
      let hits = 0,
        ev = 0,
        life = 0;
      const h = H[c],
        e = E[c],
        out = HD[c];
      for (let a = NB - 1; a >= 0; a--) {
        hits += h[a];
        ev += h[a] + e[a];
        life += ev;
        out[a] = life > 0 ? hits / life : 0;
      }
      for (let a = 0; a < NB; a++) {
        h[a] *= decay;
        e[a] *= decay;
      }
    }
  };
  const remove = (id, m) => {
    meta.delete(id);
    const last = arr.pop();
    if (last !== id) {
      arr[m.ix] = last;
      meta.get(last).ix = m.ix;
    }
    E[cls(m)][ageB(m)] += 1;
    if (G > 0) {
      ghost.delete(id);
      ghost.set(id, m);
      if (ghost.size > G) ghost.delete(first(ghost));
    }
  };
  const sample = () => {
    let best,
      bm,
      bs = Infinity;
    for (let i = 0; i < k; i++) {
      const id = arr[Math.floor(rand() * arr.length)];
      const m = meta.get(id);
      const s = hd(m) - m.depth * 1e-12;
      if (s < bs) {
        bs = s;
        best = id;
        bm = m;
      }
    }
    return [best, bm, bs];
  };
  const state = { H, E, HD };
  return {
    state,
    has: (id) => meta.has(id),
    onGet(seq, h) {
      now++;
      if (now % every === 0) rebuild();
      for (let i = h - 1; i >= 0; i--) {
        const m = meta.get(seq[i]);
        H[cls(m)][ageB(m)] += 1;
        if (noteHit) noteHit(m, now);
        m.f++;
        m.last = now;
      }
    },
    allocate(id, j, seq, npend) {
      if (meta.size + npend < C) return true;
      if (arr.length === 0) return false;
      const [v, vm, vs] = sample();
      if (admit) {
        const g = ghost.get(id);
        const nm = { id, f: (g ? g.f : 0) + 1, last: now, depth: j };
        if (HD[cls(nm)][0] < vs) return false;
      }
      remove(v, vm);
      return true;
    },
    commit(seq, pending) {
      for (let q = pending.length - 1; q >= 0; q--) {
        const j = pending[q],
          id = seq[j];
        let m = ghost.get(id);
        if (m) ghost.delete(id);
        else m = { f: 0, depth: j, first: now };
        m.f++;
        m.last = now;
        m.ix = arr.length;
        arr.push(id);
        meta.set(id, m);
      }
    },
  };
}

// ---------- prefix-tree-aware cache: only leaves (blocks with no cached child) are evictable ----------
// Each block's parent is the previous chunk of its prompt (ids name prefixes). A block's cached-children
// count is kept; eviction picks among leaves, so the cache stays prefix-closed (no orphan blocks).
// The current request's blocks are pinned during its put (the real store's read lease).
// key(m, now): eviction priority (lower = evicted first).
//   mode 'heap': key fixed between accesses of the block (exact min over leaves, O(log n)).
//   mode 'sample': key evaluated at eviction over k random leaves.
// admitFn(newMeta, victimKey, now) -> bool (optional): refuse a new block (cut the put) if false.
// ghost: bounded FIFO of evicted blocks' stats, restored when re-inserted.
// Tie-break: deeper chunk first, then older.
export function Tree(
  C,
  {
    key,
    mode = 'heap',
    k = 32,
    ghostFrac = 2,
    admitFn = null,
    seed = 3,
    onHitHook = null,
    onEvictHook = null,
  } = {},
) {
  const meta = new Map(),
    ghost = new Map(),
    G = Math.floor(ghostFrac * C);
  const heap = new MinHeap();
  const leaves = []; // leaves array for sampling (ix in m.lx)
  let now = 0,
    ver = 0;
  const pinned = new Set();
  let rng = seed >>> 0;
  const rand = () => {
    rng ^= rng << 13;
    rng >>>= 0;
    rng ^= rng >>> 17;
    rng ^= rng << 5;
    rng >>>= 0;
    return rng / 4294967296;
  };
  const fullKey = (m) => key(m, now) - m.depth * 1e-7 + m.last * 1e-11;
  const pushH = (id, m) => {
    if (mode === 'heap') {
      m.key = fullKey(m) + ++ver * 1e-16;
      heap.push(m.key, id);
    }
  };
  const addLeaf = (id, m) => {
    if (mode === 'sample') {
      m.lx = leaves.length;
      leaves.push(id);
    } else pushH(id, m);
  };
  const delLeaf = (id, m) => {
    if (mode === 'sample') {
      const last = leaves.pop();
      if (last !== id) {
        leaves[m.lx] = last;
        meta.get(last).lx = m.lx;
      }
      m.lx = -1;
    }
  };
  const pick = () => {
    if (mode === 'heap') {
      const skipped = [];
      let res;
      while (heap.size) {
        const id = heap.v[0],
          kk = heap.k[0];
        const m = meta.get(id);
        if (!m || m.key !== kk || m.nch > 0) {
          heap.pop();
          continue;
        }
        if (pinned.has(id)) {
          skipped.push([kk, id]);
          heap.pop();
          continue;
        }
        res = [id, m, kk];
        break;
      }
      for (const [kk, id] of skipped) heap.push(kk, id);
      return res;
    }
    let best,
      bs = Infinity;
    for (let i = 0; i < k && leaves.length; i++) {
      const id = leaves[Math.floor(rand() * leaves.length)];
      if (pinned.has(id)) continue;
      const m = meta.get(id);
      const s = fullKey(m);
      if (s < bs) {
        bs = s;
        best = [id, m, s];
      }
    }
    if (!best) {
      for (const id of leaves)
        if (!pinned.has(id)) {
          const m = meta.get(id);
          const s = fullKey(m);
          if (s < bs) {
            bs = s;
            best = [id, m, s];
          }
        }
    }
    return best;
  };
  const evict = (id, m) => {
    if (mode === 'heap') heap.pop();
    else delLeaf(id, m);
    meta.delete(id);
    if (onEvictHook) onEvictHook(m, now);
    if (m.parent !== undefined) {
      const pm = meta.get(m.parent);
      if (pm && --pm.nch === 0) addLeaf(m.parent, pm);
    }
    if (G > 0) {
      ghost.delete(id);
      ghost.set(id, m);
      if (ghost.size > G) ghost.delete(first(ghost));
    }
  };
  const P = {
    meta,
    ghost,
    get now() {
      return now;
    },
    has: (id) => meta.has(id),
    onGet(seq, h) {
      now++;
      pinned.clear();
      for (let i = 0; i < h; i++) pinned.add(seq[i]);
      for (let i = h - 1; i >= 0; i--) {
        const m = meta.get(seq[i]);
        if (onHitHook) onHitHook(m, now);
        m.prev = m.last;
        m.last = now;
        m.f++;
        if (m.nch === 0) pushH(seq[i], m);
      }
    },
    allocate(id, j, seq, npend) {
      if (meta.size + npend < C) return true;
      const v = pick();
      if (!v) return false;
      if (admitFn) {
        const g = ghost.get(id);
        const nm = {
          id,
          f: (g ? g.f : 0) + 1,
          last: now,
          prev: g ? g.last : -1,
          first: g ? g.first : now,
          depth: j,
          ghost: !!g,
        };
        if (!admitFn(nm, v[2], now, v[1])) return false;
      }
      evict(v[0], v[1]);
      return true;
    },
    commit(seq, pending) {
      for (let q = 0; q < pending.length; q++) {
        const j = pending[q],
          id = seq[j];
        let m = ghost.get(id);
        if (m) {
          ghost.delete(id);
          m.prev = m.last;
          m.ghost = true;
        } else m = { id, f: 0, first: now, prev: -1, depth: j, ghost: false };
        m.id = id;
        m.last = now;
        m.f++;
        m.nch = 0;
        m.parent = j > 0 ? seq[j - 1] : undefined;
        meta.set(id, m);
        if (m.parent !== undefined) {
          const pm = meta.get(m.parent);
          if (pm) {
            if (pm.nch++ === 0 && mode === 'sample') delLeaf(m.parent, pm);
          }
        }
        addLeaf(id, m);
        pinned.add(id);
      }
    },
  };
  return P;
}

// ---------- tree-LHD: hit density learned online per (class, age), sampled leaf eviction ----------
export function TreeLHD(
  C,
  {
    W = 10,
    NB = 400,
    classOf = (m) => Math.min(m.f, 6) - 1,
    NC = 6,
    every = 20,
    decay = 0.95,
    k = 32,
    ghostFrac = 4,
    admit = false,
  } = {},
) {
  const H = Array.from({ length: NC }, () => new Float64Array(NB)),
    E = Array.from({ length: NC }, () => new Float64Array(NB));
  const HD = Array.from({ length: NC }, (_, c) => {
    const a = new Float64Array(NB);
    for (let i = 0; i < NB; i++) a[i] = (c + 1) / (i + 10);
    return a;
  });
  let nreq = 0;
  const ab = (m, now) => Math.min(NB - 1, Math.floor((now - m.last) / W));
  const rebuild = () => {
    for (let c = 0; c < NC; c++) {
      let hits = 0,
        ev = 0,
        life = 0;
      const h = H[c],
        e = E[c],
        out = HD[c];
      for (let a = NB - 1; a >= 0; a--) {
        hits += h[a];
        ev += h[a] + e[a];
        life += ev;
        out[a] = life > 0 ? hits / life : 0;
      }
      for (let a = 0; a < NB; a++) {
        h[a] *= decay;
        e[a] *= decay;
      }
    }
  };
  const P = S_Tree(C, {
    mode: 'sample',
    k,
    ghostFrac,
    key: (m, now) => HD[classOf(m)][ab(m, now)],
    onHitHook: (m, now) => {
      H[classOf(m)][ab(m, now - 1)] += 1;
    },
    onEvictHook: (m, now) => {
      E[classOf(m)][ab(m, now)] += 1;
    },
    admitFn: admit ? (nm, vkey, now) => HD[classOf(nm)][0] >= vkey : null,
  });
  const og = P.onGet;
  P.onGet = (seq, h) => {
    if (++nreq % every === 0) rebuild();
    og(seq, h);
  };
  P.HD = HD;
  return P;
}
const S_Tree = Tree;

// ---------- LRFU (exp-decayed frequency), heap-friendly: key = ln(s) + last/tau ----------
export function LRFU(C, { tau = 500, ghostFrac = 4, newPenalty = 0 } = {}) {
  return Tree(C, {
    ghostFrac,
    key: (m) => {
      if (m.sAt !== m.last) {
        m.s = (m.s || 0) * (m.prev >= 0 && m.s ? Math.exp(-(m.last - m.prev) / tau) : 0) + 1;
        m.sAt = m.last;
      }
      return Math.log(m.s) + m.last / tau - (m.f === 1 ? newPenalty : 0);
    },
  });
}

// ---------- tree 2Q / SLRU: probation + main LRU queues over leaves, ghost of evicted ids ----------
// new block -> probation (or main if its id is in the ghost, or toMain(ctx) says so);
// hit -> main MRU; evict from probation while it holds >= pFrac*C blocks (or main has no evictable leaf),
// else from main (demote: main victim goes to probation MRU instead of leaving).
// Eviction only takes leaves (prefix-closed); later chunks first among equal recency.
export function Tree2Q(
  C,
  { pFrac = 0.25, ghostFrac = 1, demote = false, toMain = null, hitToMain = 1 } = {},
) {
  const meta = new Map(),
    ghost = new Map(),
    G = Math.floor(ghostFrac * C);
  const heaps = [new MinHeap(), new MinHeap()],
    size = [0, 0];
  let now = 0,
    ver = 0;
  const pinned = new Set();
  const keyOf = (m) => m.last * 1e4 - m.depth + ++ver * 1e-9;
  const push = (id, m) => {
    m.key = keyOf(m);
    heaps[m.q].push(m.key, id);
  };
  const popValid = (q) => {
    const hp = heaps[q],
      skipped = [];
    let res;
    while (hp.size) {
      const id = hp.v[0],
        kk = hp.k[0];
      const m = meta.get(id);
      if (!m || m.q !== q || m.key !== kk || m.nch > 0) {
        hp.pop();
        continue;
      }
      if (pinned.has(id)) {
        skipped.push([kk, id]);
        hp.pop();
        continue;
      }
      res = [id, m];
      break;
    }
    for (const [kk, id] of skipped) hp.push(kk, id);
    return res;
  };
  const toGhost = (id, m) => {
    if (G > 0) {
      ghost.delete(id);
      ghost.set(id, m.f);
      if (ghost.size > G) ghost.delete(first(ghost));
    }
  };
  const drop = (id, m) => {
    heaps[m.q].pop();
    size[m.q]--;
    meta.delete(id);
    if (m.parent !== undefined) {
      const pm = meta.get(m.parent);
      if (pm && --pm.nch === 0) push(m.parent, pm);
    }
    toGhost(id, m);
  };
  const evictOne = () => {
    for (let guard = 0; guard < 1e6; guard++) {
      let v;
      if (size[0] >= pFrac * C || size[1] === 0) {
        v = popValid(0);
        if (v) {
          drop(v[0], v[1]);
          return true;
        }
      }
      v = popValid(1);
      if (!v) {
        v = popValid(0);
        if (v) {
          drop(v[0], v[1]);
          return true;
        }
        return false;
      }
      if (demote && size[0] < pFrac * C) {
        heaps[1].pop();
        size[1]--;
        v[1].q = 0;
        size[0]++;
        push(v[0], v[1]);
        continue;
      }
      drop(v[0], v[1]);
      return true;
    }
    return false;
  };
  return {
    has: (id) => meta.has(id),
    onGet(seq, h) {
      now++;
      pinned.clear();
      for (let i = 0; i < h; i++) pinned.add(seq[i]);
      for (let i = h - 1; i >= 0; i--) {
        const id = seq[i],
          m = meta.get(id);
        m.f++;
        m.last = now;
        if (m.q === 0 && m.f > hitToMain) {
          size[0]--;
          size[1]++;
          m.q = 1;
        }
        if (m.nch === 0) push(id, m);
      }
    },
    allocate(id, j, seq, npend) {
      if (meta.size + npend < C) return true;
      return evictOne();
    },
    commit(seq, pending, h) {
      for (const j of pending) {
        const id = seq[j];
        const gf = ghost.get(id);
        if (gf !== undefined) ghost.delete(id);
        const m = { f: (gf || 0) + 1, last: now, depth: j, nch: 0, parent: j > 0 ? seq[j - 1] : undefined };
        m.q = gf !== undefined || (toMain && toMain(now - 1, j, seq, h)) ? 1 : 0;
        size[m.q]++;
        meta.set(id, m);
        if (m.parent !== undefined) {
          const pm = meta.get(m.parent);
          if (pm) pm.nch++;
        }
        push(id, m);
        pinned.add(id);
      }
    },
  };
}
