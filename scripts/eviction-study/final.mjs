// The eviction study's table (docs/benchmarks.md). Run: node scripts/eviction-study/final.mjs [trace]
import * as S from './sim.mjs';
const base = S.baselines();
console.log(
  'capacity (% of WS=' + S.WS + ' blocks):',
  S.FRACS.map((f) => `${f * 100}% (${S.cap(f)})`).join(' | '),
);
console.log(
  'Belady  ',
  S.FRACS.map((f) => (base[f].bel * 100).toFixed(2)).join(' | '),
  ' infinite',
  (base[1].inf * 100).toFixed(2),
);
const R = (n, mk) => S.report(n, mk, base);
R('LRU (current)', (c) => S.LRU(c));
R('2Q p=0.10 ghost=1C', (c) => S.TwoQ(c, { pFrac: 0.1, ghostFrac: 1 }));
R('2Q p=0.25 ghost=1C', (c) => S.TwoQ(c, { pFrac: 0.25, ghostFrac: 1 }));
R('SLRU p=0.25 demote ghost=1C', (c) => S.TwoQ(c, { pFrac: 0.25, ghostFrac: 1, demote: true }));
R('S3-FIFO S=10% ghost=0.9C', (c) => S.S3FIFO(c));
R('ARC', (c) => S.ARC(c));
R('LFU-DA (no ghost)', (c) => S.LFUDA(c));
R('LFU-DA ghost=1C', (c) => S.LFUDA(c, { ghostFrac: 1 }));
R('LRU-2 (leaf heap) ghost=2C', (c) => S.Tree(c, { key: (m) => (m.f >= 2 ? m.prev : -1e7 + m.last) }));
R('LRFU tau=1000 req (leaf heap)', (c) => S.LRFU(c, { tau: 1000 }));
R('LHD (leaf sampled, online HD)', (c) => S.TreeLHD(c, { decay: 0.99 }));
R('BEST: 2-class strict, ghost=4C', (c) => S.TwoQ(c, { pFrac: 0, ghostFrac: 4 }));
// ---- oracles (use the future; bounds only) ----
const seqs = S.seqs,
  N = seqs.length;
const tot = new Map();
for (const s of seqs) for (const id of s) tot.set(id, (tot.get(id) || 0) + 1);
const nextReq = [];
{
  const later = new Map();
  for (let r = N - 1; r >= 0; r--) {
    const m = new Map();
    for (const id of seqs[r]) m.set(id, later.has(id) ? later.get(id) : Infinity);
    nextReq[r] = m;
    for (const id of seqs[r]) later.set(id, r);
  }
}
const seen = new Map(),
  nu = new Map();
let cur = -1;
const wrap = (P) => {
  seen.clear();
  nu.clear();
  cur = -1;
  const og = P.onGet;
  P.onGet = (seq, h) => {
    cur++;
    for (const id of seq) {
      seen.set(id, (seen.get(id) || 0) + 1);
      nu.set(id, nextReq[cur].get(id));
    }
    og(seq, h);
  };
  return P;
};
const dead = (id) => nu.get(id) === Infinity,
  fut = (id) => tot.get(id) - (seen.get(id) || 0);
R('ORACLE dead-block: LRU, dead first+bypass', (c) =>
  wrap(S.Tree(c, { key: (m) => (dead(m.id) ? -1e7 : 0) + m.last, admitFn: (nm) => !dead(nm.id) })),
);
R('ORACLE future ref count / remaining time', (c) =>
  wrap(
    S.Tree(c, {
      mode: 'sample',
      k: 32,
      key: (m) => fut(m.id) / (N - cur),
      admitFn: (nm, vk) => fut(nm.id) / (N - cur) >= vk,
    }),
  ),
);
const rootLater = seqs.map(() => false);
{
  const s2 = new Set();
  for (let r = N - 1; r >= 0; r--) {
    const s = seqs[r];
    if (s.length) {
      rootLater[r] = s2.has(s[0]);
      s2.add(s[0]);
    }
  }
}
R('ORACLE root-reused->main, 2Q p=.05 g=2C', (c) =>
  S.Tree2Q(c, { pFrac: 0.05, ghostFrac: 2, toMain: (r) => rootLater[r] }),
);
