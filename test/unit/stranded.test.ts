import { describe, expect, it } from 'vitest';
import { computeStranded, type StoredBlock } from '../../services/cli/commands/stranded.js';

/** A hash per name: 64 hex chars, distinct per name. */
const h = (name: string): string => Buffer.from(name.padEnd(32, '.')).toString('hex').slice(0, 64);

const BB = 1000;

/** Blocks of a chain of chunks a -> b -> c ..., every group on node `n<g>`. */
function chain(model: string, names: string[], groups = 2, nodeOf = (g: number) => `n${g}`): StoredBlock[] {
  const out: StoredBlock[] = [];
  names.forEach((name, i) => {
    const parent = i === 0 ? '' : h(names[i - 1] as string);
    for (let g = 0; g < groups; g++) {
      out.push({ nodeId: nodeOf(g), model, hash: h(name), parent, g, bytes: BB });
    }
  });
  return out;
}

const groupsOf = (m: string): number | undefined => (m === 'm' ? 2 : undefined);

describe('computeStranded', () => {
  it('counts nothing stranded when every chunk is stored, complete and indexed', () => {
    const blocks = chain('m', ['a', 'b', 'c']);
    const r = computeStranded({ blocks, groupsOf, indexed: new Set(['a', 'b', 'c'].map(h)) });
    expect(r.stored).toEqual({ chunks: 3, blocks: 6, bytes: 6 * BB });
    expect(r.reachable.chunks).toBe(3);
    expect(r.stranded).toEqual({ chunks: 0, blocks: 0, bytes: 0 });
    expect(r.perNode).toEqual({
      n0: { storedBytes: 3 * BB, strandedBytes: 0 },
      n1: { storedBytes: 3 * BB, strandedBytes: 0 },
    });
  });

  it('strands every later chunk when an earlier chunk was evicted', () => {
    // b is gone entirely: c and d remain stored and even indexed, but no lookup reaches them.
    const blocks = chain('m', ['a', 'b', 'c', 'd']).filter((b) => b.hash !== h('b'));
    const r = computeStranded({ blocks, groupsOf, indexed: new Set(['a', 'c', 'd'].map(h)) });
    expect(r.reachable.chunks).toBe(1);
    expect(r.stranded).toEqual({ chunks: 2, blocks: 4, bytes: 4 * BB });
    expect(r.byReason.ancestorMissing.bytes).toBe(4 * BB);
    expect(r.byReason.groupMissing.bytes).toBe(0);
  });

  it('strands a chunk that lost one layer group, and its descendants as ancestorMissing', () => {
    const blocks = chain('m', ['a', 'b', 'c']).filter((b) => !(b.hash === h('b') && b.g === 1));
    const r = computeStranded({ blocks, groupsOf, indexed: new Set(['a', 'b', 'c'].map(h)) });
    expect(r.byReason.groupMissing).toEqual({ chunks: 1, blocks: 1, bytes: BB });
    expect(r.byReason.ancestorMissing).toEqual({ chunks: 1, blocks: 2, bytes: 2 * BB });
    expect(r.perNode.n0!.strandedBytes).toBe(2 * BB);
    expect(r.perNode.n1!.strandedBytes).toBe(BB);
  });

  it('strands an unindexed chunk and everything after it', () => {
    const blocks = chain('m', ['a', 'b', 'c']);
    const r = computeStranded({ blocks, groupsOf, indexed: new Set(['a', 'c'].map(h)) });
    expect(r.byReason.notIndexed.chunks).toBe(1);
    expect(r.byReason.ancestorMissing.chunks).toBe(1);
    expect(r.reachable.chunks).toBe(1);
  });

  it('handles branching prompts (one shared context, many suffixes) and keeps models apart', () => {
    const ctx = chain('m', ['ctx0', 'ctx1']);
    const q = (name: string): StoredBlock[] =>
      [0, 1].map((g) => ({ nodeId: 'n2', model: 'm', hash: h(name), parent: h('ctx1'), g, bytes: BB }));
    // The same hash under another model is another chunk: its parent is not stored for that model.
    const other: StoredBlock = { nodeId: 'n0', model: 'x', hash: h('q1'), parent: h('ctx1'), g: 0, bytes: 7 };
    const blocks = [...ctx, ...q('q1'), ...q('q2'), other];
    const indexed = new Set(['ctx0', 'ctx1', 'q1', 'q2'].map(h));
    const r = computeStranded({ blocks, groupsOf, indexed });
    expect(r.reachable.chunks).toBe(4);
    expect(r.stranded).toEqual({ chunks: 1, blocks: 1, bytes: 7 });
    expect(r.unknownModels).toEqual(['x']);

    const cut = computeStranded({ blocks: blocks.filter((b) => b.hash !== h('ctx0')), groupsOf, indexed });
    // Without ctx0 nothing of model m is reachable.
    expect(cut.reachable.chunks).toBe(0);
    expect(cut.stranded.bytes).toBe(3 * 2 * BB + 7);
  });

  it('walks long chains without recursion limits', () => {
    const names = Array.from({ length: 20_000 }, (_, i) => `c${i}`);
    const blocks = chain('m', names, 1);
    const one = (m: string): number | undefined => (m === 'm' ? 1 : undefined);
    const all = computeStranded({ blocks, groupsOf: one, indexed: new Set(names.map(h)) });
    expect(all.reachable.chunks).toBe(20_000);
    const missing = new Set(names.map(h));
    missing.delete(h('c10'));
    const r = computeStranded({ blocks, groupsOf: one, indexed: missing });
    expect(r.reachable.chunks).toBe(10);
    expect(r.byReason.notIndexed.chunks).toBe(1);
    expect(r.byReason.ancestorMissing.chunks).toBe(20_000 - 11);
  });
});
