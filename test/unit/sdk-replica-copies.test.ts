import { describe, expect, it } from 'vitest';
import type { CellPlacement } from '../../shared/protocol/cluster.js';
import {
  DownNodes,
  HotCopies,
  readCandidates,
  rendezvousOrder,
  SyncMemory,
} from '../../shared/sdk/copies.js';
import { judgeBatch, LeaseWindow } from '../../shared/sdk/lease.js';

const cell = (...replicas: string[]): CellPlacement => ({ replicas, epoch: 1 });

describe('readCandidates', () => {
  it('spreads cells over every replica across requests, and lists every copy once', () => {
    const counts = new Map<string, number>();
    for (let salt = 0; salt < 2000; salt++) {
      const c = readCandidates({ cell: cell('a', 'b'), cellId: '0.1', blockKey: 'h:0', salt });
      expect([...c].sort()).toEqual(['a', 'b']);
      counts.set(c[0]!, (counts.get(c[0]!) ?? 0) + 1);
    }
    // Rendezvous on a random salt: each copy serves about half (binomial, 2000 draws).
    expect(counts.get('a')).toBeGreaterThan(850);
    expect(counts.get('b')).toBeGreaterThan(850);
  });

  it('keeps every block of a cell on one copy within a request', () => {
    const first = new Set<string>();
    for (let k = 0; k < 20; k++) {
      first.add(
        readCandidates({ cell: cell('a', 'b', 'c'), cellId: '1.3', blockKey: `h${k}:1`, salt: 7 })[0]!,
      );
    }
    expect(first.size).toBe(1);
  });

  it('reads the primary first without spreading, replicas as fallbacks in table order', () => {
    for (let salt = 0; salt < 50; salt++) {
      expect(
        readCandidates({ cell: cell('p', 'r1', 'r2'), cellId: '0.0', blockKey: 'x', salt, spread: false }),
      ).toEqual(['p', 'r1', 'r2']);
    }
  });

  it('does not spread to a replica that refused NOT_IN_SYNC, but keeps it as a last resort', () => {
    for (let salt = 0; salt < 200; salt++) {
      const c = readCandidates({
        cell: cell('p', 'r'),
        cellId: '0.0',
        blockKey: 'x',
        salt,
        outOfSync: (n) => n === 'r',
      });
      expect(c).toEqual(['p', 'r']);
    }
  });

  it('puts nodes to avoid (down this call) last, and a cell without nodes has no candidates', () => {
    for (let salt = 0; salt < 100; salt++) {
      const c = readCandidates({
        cell: cell('p', 'r'),
        cellId: '0.0',
        blockKey: 'x',
        salt,
        avoid: new Set(['p']),
      });
      expect(c).toEqual(['r', 'p']);
    }
    expect(readCandidates({ cell: cell(), cellId: '0.0', blockKey: 'x', salt: 1 })).toEqual([]);
    expect(readCandidates({ cell: undefined, cellId: '0.0', blockKey: 'x', salt: 1 })).toEqual([]);
  });

  it('spreads a hot block over its extra copies too, per block', () => {
    const counts = new Map<string, number>();
    for (let salt = 0; salt < 3000; salt++) {
      const c = readCandidates({
        cell: cell('p', 'r'),
        cellId: '0.0',
        blockKey: 'h:0',
        salt,
        hotExtras: ['x', 'p', 'y'],
      });
      expect([...c].sort()).toEqual(['p', 'r', 'x', 'y']);
      counts.set(c[0]!, (counts.get(c[0]!) ?? 0) + 1);
    }
    for (const n of ['p', 'r', 'x', 'y']) expect(counts.get(n)).toBeGreaterThan(600);
  });

  it('rendezvous order is deterministic and moves little when a node is removed', () => {
    const nodes = ['a', 'b', 'c', 'd'];
    let moved = 0;
    for (let k = 0; k < 400; k++) {
      const full = rendezvousOrder(nodes, `cell${k}`, 3);
      expect(rendezvousOrder(nodes, `cell${k}`, 3)).toEqual(full);
      const without = rendezvousOrder(['a', 'b', 'c'], `cell${k}`, 3);
      if (full[0] !== 'd' && without[0] !== full[0]) moved++;
    }
    expect(moved).toBe(0);
  });
});

describe('HotCopies and SyncMemory', () => {
  it('forgets hot copies after their TTL and keeps at most entriesMax', () => {
    let now = 0;
    const hot = new HotCopies(2, 100, () => now);
    hot.note('k1', ['x']);
    hot.note('k2', ['y']);
    hot.note('k3', ['z']);
    expect(hot.size).toBe(2);
    expect(hot.extras('k1')).toEqual([]);
    expect(hot.extras('k3')).toEqual(['z']);
    now = 101;
    expect(hot.extras('k3')).toEqual([]);
    hot.note('k4', []);
    expect(hot.extras('k4')).toEqual([]);
  });

  it('marks a replica out of sync for a cell for ttlMs only', () => {
    let now = 0;
    const m = new SyncMemory(50, 10, () => now);
    m.markOut('r', '0.1');
    expect(m.isOut('r', '0.1')).toBe(true);
    expect(m.isOut('r', '0.2')).toBe(false);
    expect(m.isOut('p', '0.1')).toBe(false);
    now = 51;
    expect(m.isOut('r', '0.1')).toBe(false);
  });

  it('remembers a node that failed a read until its TTL ends or it answers, and puts it last', () => {
    let now = 0;
    const down = new DownNodes(3000, () => now);
    down.mark('p');
    expect(down.current()).toEqual(new Set(['p']));
    // A later read of a cell led by the suspect reads its replica first, the suspect last.
    const order = readCandidates({
      cell: cell('p', 'r'),
      cellId: '0.1',
      blockKey: 'b',
      salt: 1,
      spread: false,
      avoid: down.current(),
    });
    expect(order).toEqual(['r', 'p']);
    now = 2999;
    expect(down.current().has('p')).toBe(true);
    down.clear('p');
    expect(down.current().size).toBe(0);
    down.mark('p');
    now = 6000;
    expect(down.current().size).toBe(0);
    const off = new DownNodes(0, () => now);
    off.mark('p');
    expect(off.current().size).toBe(0);
  });
});

describe('read lease fails closed', () => {
  const ok = { transferred: true, checksum: 7, expected: 7 };

  it('accepts blocks verified before sendTime + ttl - margin, rejects them after', () => {
    let now = 1000;
    const w = LeaseWindow.startNow(500, 50, () => now);
    expect(w.deadline).toBe(1450);
    now = 1450;
    expect(judgeBatch(w, [ok])).toEqual(['ok']);
    now = 1450.001;
    expect(judgeBatch(w, [ok, ok])).toEqual(['late', 'late']);
  });

  it('measures from the send time, not from when the reply arrived', () => {
    let now = 0;
    const w = LeaseWindow.startNow(300, 0, () => now); // locate sent at t=0
    now = 250; // reply after 250 ms: only 50 ms of the lease are left
    now += 60; // the read and check take 60 ms
    expect(judgeBatch(w, [ok])).toEqual(['late']);
  });

  it('tells failed transfers and corrupt blocks apart, and never calls a late block corrupt', () => {
    let now = 0;
    const w = new LeaseWindow(0, 100, 10, () => now);
    const bad = { transferred: true, checksum: 1, expected: 2 };
    const failed = { transferred: false, checksum: undefined, expected: 2 };
    expect(judgeBatch(w, [ok, bad, failed])).toEqual(['ok', 'corrupt', 'transfer_failed']);
    now = 95;
    expect(judgeBatch(w, [ok, bad, failed])).toEqual(['late', 'late', 'transfer_failed']);
  });
});
