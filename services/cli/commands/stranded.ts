/**
 * Stranded bytes: cached blocks that no lookup can reach. Pure (no I/O): `kvfabric status`
 * gathers every node's committed blocks (shard `stats {chunks: true}`) and which chunk hashes the
 * prefix index holds, then calls `computeStranded`.
 *
 * A lookup counts the leading chunk hashes of a prompt that are indexed, and a get serves a chunk
 * only when every layer group of it and of every earlier chunk arrives. So a chunk is reachable
 * iff it is indexed, all of its layer groups are stored, and its parent chunk is reachable (chunk
 * 0, parent '', has no parent). Every stored block of a chunk that is not reachable is stranded:
 * it takes arena space until LRU/TTL eviction reclaims it, and no worker can ever read it.
 *
 * Each stranded chunk is attributed to ONE reason, the earliest in the prefix: an ancestor that
 * is unreachable (the chain is cut: "an earlier chunk is gone"), else a missing layer group of
 * the chunk itself, else a missing index entry. A put in progress (blocks committed, index entry
 * not yet written) shows up as `notIndexed` for an instant; that is expected.
 */

export interface StoredBlock {
  nodeId: string;
  model: string;
  /** Chunk hash (64 hex). */
  hash: string;
  /** Previous chunk's hash, '' for chunk 0. */
  parent: string;
  /** Layer group. */
  g: number;
  bytes: number;
}

export interface StrandedInput {
  blocks: readonly StoredBlock[];
  /** Layer groups of each model under the cluster's partition spec; undefined: unknown model. */
  groupsOf: (model: string) => number | undefined;
  /** Chunk hashes present in the prefix index. */
  indexed: ReadonlySet<string>;
}

export type StrandedReason = 'ancestorMissing' | 'groupMissing' | 'notIndexed';

export interface StrandedTotals {
  blocks: number;
  bytes: number;
}

export interface StrandedReport {
  /** Every stored block seen. */
  stored: StrandedTotals & { chunks: number };
  reachable: StrandedTotals & { chunks: number };
  stranded: StrandedTotals & { chunks: number };
  /** Stranded bytes (and chunks) by the reason their chunk is unreachable. */
  byReason: Record<StrandedReason, StrandedTotals & { chunks: number }>;
  /** Stranded bytes per node, and the node's stored bytes. */
  perNode: Record<string, { storedBytes: number; strandedBytes: number }>;
  /** Models whose layer-group count was unknown (their chunks count as complete when g 0..max seen). */
  unknownModels: string[];
}

interface Chunk {
  model: string;
  hash: string;
  parent: string;
  /** Distinct layer groups stored (any copy). */
  groups: Set<number>;
  blocks: StoredBlock[];
}

const key = (model: string, hash: string): string => `${model}\u0000${hash}`;

function emptyTotals(): StrandedTotals & { chunks: number } {
  return { blocks: 0, bytes: 0, chunks: 0 };
}

function collectChunks(blocks: readonly StoredBlock[]): Map<string, Chunk> {
  const chunks = new Map<string, Chunk>();
  for (const b of blocks) {
    const k = key(b.model, b.hash);
    let c = chunks.get(k);
    if (c === undefined) {
      c = { model: b.model, hash: b.hash, parent: b.parent, groups: new Set(), blocks: [] };
      chunks.set(k, c);
    }
    c.groups.add(b.g);
    c.blocks.push(b);
  }
  return chunks;
}

/** The chunk's own verdict, ignoring ancestors: complete and indexed, or why not. */
function ownVerdict(
  c: Chunk,
  groups: number,
  indexed: ReadonlySet<string>,
): 'ok' | 'groupMissing' | 'notIndexed' {
  for (let g = 0; g < groups; g++) if (!c.groups.has(g)) return 'groupMissing';
  return indexed.has(c.hash) ? 'ok' : 'notIndexed';
}

/**
 * Reachability of every chunk, memoised, walking parent chains iteratively (a chain can be
 * thousands of chunks long: no recursion). Returns 'ok' or the stranded reason.
 */
function verdicts(
  chunks: Map<string, Chunk>,
  groupsFor: (c: Chunk) => number,
  indexed: ReadonlySet<string>,
): Map<string, 'ok' | StrandedReason> {
  const memo = new Map<string, 'ok' | StrandedReason>();
  for (const start of chunks.keys()) {
    if (memo.has(start)) continue;
    // Walk up until a known verdict, a root, or a parent that is not stored at all.
    const path: string[] = [];
    const onPath = new Set<string>();
    let cur: string | undefined = start;
    let above: 'ok' | StrandedReason = 'ok';
    while (cur !== undefined) {
      const known = memo.get(cur);
      if (known !== undefined) {
        above = known;
        break;
      }
      if (onPath.has(cur)) {
        // A cycle cannot come from chained hashes; treat it as a cut chain rather than loop.
        above = 'ancestorMissing';
        break;
      }
      const c = chunks.get(cur);
      if (c === undefined) {
        above = 'ancestorMissing';
        break;
      }
      path.push(cur);
      onPath.add(cur);
      cur = c.parent === '' ? undefined : key(c.model, c.parent);
    }
    // Resolve from the top of the walked path down to `start`.
    for (let i = path.length - 1; i >= 0; i--) {
      const k = path[i] as string;
      const c = chunks.get(k) as Chunk;
      const v: 'ok' | StrandedReason =
        above === 'ok' ? ownVerdict(c, groupsFor(c), indexed) : 'ancestorMissing';
      memo.set(k, v);
      above = v;
    }
  }
  return memo;
}

export function computeStranded(input: StrandedInput): StrandedReport {
  const chunks = collectChunks(input.blocks);
  const unknown = new Set<string>();
  for (const c of chunks.values()) if (input.groupsOf(c.model) === undefined) unknown.add(c.model);
  const groupsFor = (c: Chunk): number => input.groupsOf(c.model) ?? Math.max(...c.groups) + 1;
  const memo = verdicts(chunks, groupsFor, input.indexed);
  const report: StrandedReport = {
    stored: emptyTotals(),
    reachable: emptyTotals(),
    stranded: emptyTotals(),
    byReason: { ancestorMissing: emptyTotals(), groupMissing: emptyTotals(), notIndexed: emptyTotals() },
    perNode: {},
    unknownModels: [],
  };
  for (const [k, c] of chunks) {
    const v = memo.get(k) ?? 'ancestorMissing';
    const bytes = c.blocks.reduce((a, b) => a + b.bytes, 0);
    const add = (t: StrandedTotals & { chunks: number }): void => {
      t.chunks++;
      t.blocks += c.blocks.length;
      t.bytes += bytes;
    };
    add(report.stored);
    if (v === 'ok') add(report.reachable);
    else {
      add(report.stranded);
      add(report.byReason[v]);
    }
    for (const b of c.blocks) {
      const n = (report.perNode[b.nodeId] ??= { storedBytes: 0, strandedBytes: 0 });
      n.storedBytes += b.bytes;
      if (v !== 'ok') n.strandedBytes += b.bytes;
    }
  }
  report.unknownModels = [...unknown].sort();
  return report;
}
