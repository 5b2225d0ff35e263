// Dev probe: one big prefix put + gets through the real fabric, with phase timings.
// node scripts/probe-e2e.mjs [tokens=8192] [gets=3]
import { startFabric } from '../dist/services/cli/bench/clusters.js';
const tokens = Number(process.argv[2] ?? 8192);
const gets = Number(process.argv[3] ?? 3);
const f = await startFabric({
  shards: 3,
  arenaBytes: Number(process.env.ARENA ?? 3 * 1024 ** 3),
  models: ['llama-3-8b'],
  log: (l) => {
    if (process.env.V) console.error(l);
  },
});
if (process.env.WAIT) await new Promise((r) => setTimeout(r, Number(process.env.WAIT)));
try {
  const kv = await f.kvf.allocKv(tokens, { model: 'llama-3-8b' });
  for (const b of kv.groups ?? Object.values(kv)) if (b?.fill) b.fill(7);
  const toks = new Uint32Array(tokens).map((_, i) => (i * 2654435761) >>> 0);
  let t = performance.now();
  const r = await f.kvf.put(toks, kv, { model: 'llama-3-8b' });
  console.log('put', (performance.now() - t).toFixed(0), 'ms', JSON.stringify(r));
  for (let i = 0; i < gets; i++) {
    t = performance.now();
    const d = await f.kvf.getDetailed(toks, kv, { model: 'llama-3-8b' });
    const ms = performance.now() - t;
    console.log(
      'get',
      ms.toFixed(0),
      'ms',
      (d.bytes / ms / 1e6).toFixed(2),
      'GB/s',
      d.tokens,
      'tokens',
      'failovers',
      d.failovers,
      'failed',
      d.failedBlocks,
    );
  }
} finally {
  await f.stop();
}
