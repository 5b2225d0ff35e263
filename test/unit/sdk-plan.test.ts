import { describe, expect, it } from 'vitest';
import { chunkHashes } from '../../shared/hashing.js';
import { cellFor, cellId, allCells, type PartitionSpec } from '../../shared/partition.js';
import { BUILTIN_PROFILES, blockBytes } from '../../shared/profiles.js';
import type { CellPlacement } from '../../shared/protocol/cluster.js';
import { buffersChunkCapacity, effectiveLayerGroups, modelLayout } from '../../shared/sdk/layout.js';
import { BlockGrid, groupByPrimary, planBlocks, type PlacementView } from '../../shared/sdk/plan.js';

const spec: PartitionSpec = { layerGroups: 2, seqBuckets: 4, seqBucketTokens: 32 };

/** Cell (g, s) -> node `n${(g + s) % nodes}`, one replica. */
function placement(nodes: number, epoch = 3, drop: string[] = []): PlacementView {
  const cells: Record<string, CellPlacement> = {};
  for (const c of allCells(spec)) {
    const id = cellId(c);
    cells[id] = { replicas: drop.includes(id) ? [] : [`n${(c.g + c.s) % nodes}`], epoch: 1 };
  }
  return { epoch, spec, cells };
}

function tokens(n: number, seed = 1): number[] {
  return Array.from({ length: n }, (_, i) => (i * 7919 + seed * 104729) % 50_000);
}

const tiny = BUILTIN_PROFILES['tiny-test']!; // chunkTokens 16, 4 layers
const hashesOf = (n: number, seed = 1): string[] =>
  chunkHashes(tokens(n, seed), { modelId: tiny.id, namespace: 'ns', chunkTokens: tiny.chunkTokens });

describe('planBlocks', () => {
  it('plans every (chunk, group) block once, on its cell primary, group-major per node', () => {
    const hashes = hashesOf(16 * 10);
    const p = placement(3);
    const plan = planBlocks({
      placement: p,
      hashes,
      chunks: 10,
      groups: 2,
      chunkTokens: 16,
      blocksPerNodeMax: 4096,
    });
    expect(plan.chunks).toBe(10);
    expect(plan.unplaced).toEqual([]);
    const all = [...plan.byNode.values()].flat();
    expect(all).toHaveLength(20);
    expect(new Set(all.map((b) => `${b.i}:${b.g}`)).size).toBe(20);
    for (const [node, blocks] of plan.byNode) {
      for (const b of blocks) {
        const cell = cellFor(spec, {
          chunkIndex: b.i,
          chunkTokens: 16,
          firstChunkHash: hashes[0]!,
          layerGroup: b.g,
        });
        expect(b.cellId).toBe(cellId(cell));
        expect(b.s).toBe(cell.s);
        expect(p.cells[b.cellId]!.replicas[0]).toBe(node);
        expect(b.hash).toBe(hashes[b.i]);
        expect(b.parent).toBe(b.i === 0 ? '' : hashes[b.i - 1]);
      }
      const order = blocks.map((b) => b.g * 1000 + b.i);
      expect(order).toEqual([...order].sort((a, b) => a - b));
    }
  });

  it('keeps consecutive chunks of one sequence window on one node per group', () => {
    const hashes = hashesOf(16 * 4); // 4 chunks x 16 tokens = 64 tokens = 2 windows of 32
    const plan = planBlocks({
      placement: placement(8),
      hashes,
      chunks: 4,
      groups: 2,
      chunkTokens: 16,
      blocksPerNodeMax: 4096,
    });
    const nodeOf = new Map<string, string>();
    for (const [node, blocks] of plan.byNode) for (const b of blocks) nodeOf.set(`${b.i}:${b.g}`, node);
    expect(nodeOf.get('0:0')).toBe(nodeOf.get('1:0'));
    expect(nodeOf.get('2:1')).toBe(nodeOf.get('3:1'));
  });

  it('stops before the chunk that would push a node past blocksPerNodeMax', () => {
    const hashes = hashesOf(16 * 20);
    // one node owns everything: 2 blocks per chunk, cap 7 -> 3 chunks (6 blocks)
    const plan = planBlocks({
      placement: placement(1),
      hashes,
      chunks: 20,
      groups: 2,
      chunkTokens: 16,
      blocksPerNodeMax: 7,
    });
    expect(plan.chunks).toBe(3);
    expect(plan.byNode.get('n0')).toHaveLength(6);
  });

  it('reports blocks of cells without a primary as unplaced', () => {
    const hashes = hashesOf(16 * 3);
    const first = cellId(
      cellFor(spec, { chunkIndex: 0, chunkTokens: 16, firstChunkHash: hashes[0]!, layerGroup: 1 }),
    );
    const plan = planBlocks({
      placement: placement(2, 3, [first]),
      hashes,
      chunks: 3,
      groups: 2,
      chunkTokens: 16,
      blocksPerNodeMax: 4096,
    });
    expect(plan.unplaced.map((b) => b.g)).toContain(1);
    expect(plan.unplaced.every((b) => b.cellId === first)).toBe(true);
    expect([...plan.byNode.values()].flat().length + plan.unplaced.length).toBe(6);
  });

  it('plans nothing for zero chunks and caps at the hashes available', () => {
    expect(
      planBlocks({
        placement: placement(2),
        hashes: [],
        chunks: 5,
        groups: 2,
        chunkTokens: 16,
        blocksPerNodeMax: 9,
      }).chunks,
    ).toBe(0);
    const hashes = hashesOf(16 * 2);
    expect(
      planBlocks({
        placement: placement(2),
        hashes,
        chunks: 9,
        groups: 2,
        chunkTokens: 16,
        blocksPerNodeMax: 99,
      }).chunks,
    ).toBe(2);
  });

  it('regroups refused blocks on a new table', () => {
    const hashes = hashesOf(16 * 6);
    const plan = planBlocks({
      placement: placement(2),
      hashes,
      chunks: 6,
      groups: 2,
      chunkTokens: 16,
      blocksPerNodeMax: 99,
    });
    const refused = plan.byNode.get('n0') ?? [];
    expect(refused.length).toBeGreaterThan(0);
    const moved = placement(3, 4);
    const { byNode, unplaced } = groupByPrimary(refused, moved.cells);
    expect(unplaced).toEqual([]);
    for (const [node, blocks] of byNode)
      for (const b of blocks) expect(moved.cells[b.cellId]!.replicas[0]).toBe(node);
    expect([...byNode.values()].flat()).toHaveLength(refused.length);
  });
});

describe('BlockGrid hit length', () => {
  it('counts leading chunks whose every group is ok', () => {
    const g = new BlockGrid(5, 3);
    expect(g.leadingComplete()).toBe(0);
    for (let i = 0; i < 5; i++) for (let k = 0; k < 3; k++) g.set(i, k, true);
    expect(g.leadingComplete()).toBe(5);
    g.set(3, 2, false); // a vanished / corrupt block in chunk 3, group 2
    expect(g.leadingComplete()).toBe(3);
    expect(g.leadingInGroup(0)).toBe(5);
    expect(g.leadingInGroup(2)).toBe(3);
    g.set(0, 1, false); // a hole at chunk 0 makes every later chunk unusable
    expect(g.leadingComplete()).toBe(0);
    expect(g.leadingInGroup(1)).toBe(0);
  });

  it('rejects blocks outside the grid', () => {
    const g = new BlockGrid(2, 2);
    expect(() => g.set(2, 0, true)).toThrow(RangeError);
    expect(() => g.set(0, -1, true)).toThrow(RangeError);
  });
});

describe('model layout', () => {
  it('caps layer groups at the profile layer count and sizes blocks per group', () => {
    const one = { ...tiny, id: 'x:L0', layers: 1 };
    expect(effectiveLayerGroups(one, { layerGroups: 4 })).toBe(1);
    const l = modelLayout(tiny, { layerGroups: 3 }); // 4 layers -> 2, 1, 1
    expect(l.groups.map((g) => g.layers)).toEqual([2, 1, 1]);
    expect(l.blockBytes).toEqual([blockBytes(tiny, 2), blockBytes(tiny, 1), blockBytes(tiny, 1)]);
    expect(l.blockBytes[0]).toBe(2 * 2 * 2 * 16 * 16 * 2);
  });

  it('computes buffer capacity in whole chunks and rejects the wrong group count', () => {
    const l = modelLayout(tiny, { layerGroups: 2 });
    const bb = l.blockBytes[0]!;
    expect(buffersChunkCapacity(l, { groups: [new Uint8Array(bb * 3), new Uint8Array(bb * 5 - 1)] })).toBe(3);
    expect(buffersChunkCapacity(l, { groups: [new Uint8Array(bb * 3), new Uint8Array(bb * 2 + 7)] })).toBe(2);
    expect(() => buffersChunkCapacity(l, { groups: [new Uint8Array(bb)] })).toThrow(/SHAPE|expected 2/);
  });
});
