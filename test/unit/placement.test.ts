import { describe, expect, it } from 'vitest';
import {
  chooseReplicaSet,
  computePlacement,
  hashUnit,
  orderReplicaSet,
  type PlacementInput,
  type PlacementNode,
} from '../../services/coordinator/placement.js';
import type { PlacementTable } from '../../shared/protocol/cluster.js';
import { placementTableSchema } from '../../shared/protocol/cluster.js';

const spec64 = { layerGroups: 64, seqBuckets: 64, seqBucketTokens: 1024 };

function node(
  nodeId: string,
  weight = 1,
  role: 'shard' | 'replica' = 'shard',
  incarnation = 'i1',
): PlacementNode {
  return { nodeId, weight, role, incarnation };
}

function place(
  nodes: PlacementNode[],
  prev?: PlacementTable,
  over: Partial<PlacementInput> = {},
): ReturnType<typeof computePlacement> {
  return computePlacement({
    prev,
    spec: spec64,
    replicationFactor: 1,
    nodes,
    term: 1,
    leaderId: 'c1',
    reason: 'test',
    nowWallMs: 0,
    ...over,
  });
}

function shares(t: PlacementTable, position = 0): Map<string, number> {
  const m = new Map<string, number>();
  const cells = Object.values(t.cells);
  for (const c of cells) {
    const n = c.replicas[position];
    if (n !== undefined) m.set(n, (m.get(n) ?? 0) + 1 / cells.length);
  }
  return m;
}

describe('placement: weighted rendezvous hashing', () => {
  it('hashUnit is strictly inside (0, 1) and spreads', () => {
    let sum = 0;
    for (let i = 0; i < 2000; i++) {
      const u = hashUnit(`${i}.0`, 'n');
      expect(u).toBeGreaterThan(0);
      expect(u).toBeLessThan(1);
      sum += u;
    }
    expect(sum / 2000).toBeGreaterThan(0.45);
    expect(sum / 2000).toBeLessThan(0.55);
  });

  it('is deterministic: same input, same table, regardless of node order', () => {
    const nodes = [node('a', 3), node('b', 1), node('c', 2)];
    const t1 = place(nodes).table;
    const t2 = place([...nodes].reverse()).table;
    expect(t2).toEqual(t1);
    expect(Object.keys(t1.cells)).toHaveLength(64 * 64);
    // And the table passes its own wire schema.
    expect(() => placementTableSchema.parse(JSON.parse(JSON.stringify(t1)))).not.toThrow();
  });

  it('respects weights within a tolerance over 64x64 cells', () => {
    const t = place([node('a', 1), node('b', 2), node('c', 3), node('d', 4)]).table;
    const got = shares(t);
    const expected: Record<string, number> = { a: 0.1, b: 0.2, c: 0.3, d: 0.4 };
    for (const [id, want] of Object.entries(expected)) {
      expect(Math.abs((got.get(id) ?? 0) - want)).toBeLessThan(0.03);
    }
  });

  it('gives a weight-0 node no cells and a replica-role node no primaries', () => {
    const nodes = [node('a'), node('b'), node('z', 0), node('r', 5, 'replica')];
    const t = place(nodes, undefined, { replicationFactor: 2 }).table;
    for (const c of Object.values(t.cells)) {
      expect(c.replicas).toHaveLength(2);
      expect(c.replicas).not.toContain('z');
      expect(c.replicas[0]).not.toBe('r');
    }
    // The heavy replica node holds most second copies.
    expect(shares(t, 1).get('r') ?? 0).toBeGreaterThan(0.6);
  });

  it('uses min(rf, live nodes) distinct nodes per cell', () => {
    const one = place([node('a')], undefined, { replicationFactor: 3 }).table;
    for (const c of Object.values(one.cells)) expect(c.replicas).toEqual(['a']);
    const t = place([node('a'), node('b'), node('c'), node('d')], undefined, { replicationFactor: 3 }).table;
    for (const c of Object.values(t.cells)) {
      expect(c.replicas).toHaveLength(3);
      expect(new Set(c.replicas).size).toBe(3);
    }
    const none = place([], undefined, { replicationFactor: 2 }).table;
    for (const c of Object.values(none.cells)) expect(c.replicas).toEqual([]);
  });
});

describe('placement: minimal movement and epochs', () => {
  for (const rf of [1, 2, 3]) {
    it(`join moves only the cells the new node enters (rf=${rf})`, () => {
      const base = [node('a', 2), node('b', 1), node('c', 1), node('d', 3)];
      const before = place(base, undefined, { replicationFactor: rf }).table;
      const after = place([...base, node('e', 2)], before, { replicationFactor: rf });
      expect(after.table.epoch).toBe(before.epoch + 1);
      let moved = 0;
      for (const [id, cell] of Object.entries(after.table.cells)) {
        const old = before.cells[id];
        if (!cell.replicas.includes('e')) {
          expect(cell).toEqual(old); // identical replicas AND epoch
        } else {
          moved++;
          expect(cell.epoch).toBe(after.table.epoch);
          // Only 'e' came in; at most one old node was displaced and the rest kept their order.
          const kept = cell.replicas.filter((n) => n !== 'e');
          expect(kept).toEqual(old?.replicas.filter((n) => kept.includes(n)));
          expect(old!.replicas.filter((n) => !kept.includes(n)).length).toBeLessThanOrEqual(1);
        }
      }
      expect(after.moves.map((m) => m.cell).sort()).toEqual(
        Object.entries(after.table.cells)
          .filter(([, c]) => c.replicas.includes('e'))
          .map(([id]) => id)
          .sort(),
      );
      if (rf === 1) {
        // The newcomer wins about its weight share (2/9) of the cells.
        expect(Math.abs((shares(after.table).get('e') ?? 0) - 2 / 9)).toBeLessThan(0.03);
      } else {
        // With copies elsewhere, a newcomer (no data yet) joins behind the existing holders.
        expect(shares(after.table).get('e') ?? 0).toBe(0);
      }
      expect(moved).toBeGreaterThan(0);
    });

    it(`leave moves only the cells the leaving node held (rf=${rf})`, () => {
      const base = [node('a', 2), node('b', 1), node('c', 1), node('d', 3)];
      const before = place(base, undefined, { replicationFactor: rf }).table;
      const after = place(
        base.filter((n) => n.nodeId !== 'b'),
        before,
        { replicationFactor: rf },
      );
      for (const [id, cell] of Object.entries(after.table.cells)) {
        const old = before.cells[id]!;
        expect(cell.replicas).not.toContain('b');
        if (!old.replicas.includes('b')) {
          expect(cell).toEqual(old);
        } else {
          expect(cell.epoch).toBe(after.table.epoch);
          // Survivors keep their order and lead: the next replica is promoted, not a fresh node.
          const survivors = old.replicas.filter((n) => n !== 'b');
          expect(cell.replicas.slice(0, survivors.length)).toEqual(survivors);
          expect(cell.replicas).toHaveLength(Math.min(rf, 3));
        }
      }
      expect(after.moves.every((m) => m.from.includes('b') && !m.to.includes('b'))).toBe(true);
      expect(after.moves.length).toBe(
        Object.values(before.cells).filter((c) => c.replicas.includes('b')).length,
      );
    });
  }

  it('no change: same epoch+1 table with no moves and changed=false', () => {
    const nodes = [node('a'), node('b')];
    const t1 = place(nodes).table;
    const r = place(nodes, t1);
    expect(r.changed).toBe(false);
    expect(r.moves).toEqual([]);
    for (const [id, c] of Object.entries(r.table.cells)) expect(c).toEqual(t1.cells[id]);
  });

  it('a restarted member (new incarnation) bumps only its cells, without moving them', () => {
    const t1 = place([node('a'), node('b'), node('c')], undefined, { replicationFactor: 2 }).table;
    const r = place([node('a'), node('b', 1, 'shard', 'i2'), node('c')], t1, { replicationFactor: 2 });
    expect(r.changed).toBe(true);
    for (const [id, c] of Object.entries(r.table.cells)) {
      const old = t1.cells[id]!;
      expect(c.replicas).toEqual(old.replicas);
      expect(c.epoch).toBe(old.replicas.includes('b') ? r.table.epoch : old.epoch);
    }
    expect(r.moves.every((m) => m.from.includes('b') && m.to.join() === m.from.join())).toBe(true);
  });

  it('a spec change re-places every cell', () => {
    const t1 = place([node('a'), node('b')]).table;
    const r = place([node('a'), node('b')], t1, {
      spec: { layerGroups: 2, seqBuckets: 3, seqBucketTokens: 1024 },
    });
    expect(Object.keys(r.table.cells)).toHaveLength(6);
    expect(r.moves).toHaveLength(6);
    expect(Object.values(r.table.cells).every((c) => c.epoch === r.table.epoch)).toBe(true);
  });

  it('rejects a spec whose table would be too large', () => {
    expect(() =>
      place([node('a')], undefined, { spec: { layerGroups: 512, seqBuckets: 512, seqBucketTokens: 1 } }),
    ).toThrow(/cells exceed/);
  });
});

describe('placement: replica-set ordering', () => {
  const role = (n: string): 'shard' | 'replica' => (n.startsWith('r') ? 'replica' : 'shard');

  it('keeps survivors first in previous order, newcomers after', () => {
    expect(orderReplicaSet(['a', 'b', 'c'], ['c', 'x', 'a'], role)).toEqual(['a', 'c', 'x']);
    expect(orderReplicaSet(undefined, ['c', 'x', 'a'], role)).toEqual(['c', 'x', 'a']);
  });

  it('never puts a replica-role node first', () => {
    expect(orderReplicaSet(['a', 'r1'], ['r1', 'b'], role)).toEqual(['b', 'r1']);
  });

  it('chooseReplicaSet returns no nodes when only replica-role nodes are live', () => {
    expect(chooseReplicaSet('0.0', [node('r1', 1, 'replica')], 2)).toEqual([]);
  });
});
