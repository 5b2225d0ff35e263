/**
 * Coordinator with one instance against a real nats-server: membership, dead-node detection,
 * minimal movement, events, register_model, status, PlacementCache and term fencing.
 * Members are real MemberAgents writing real KV records (there is no shard node here).
 */
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { ClusterBuckets } from '../../shared/cluster/buckets.js';
import { CoordinatorClient } from '../../shared/cluster/coordinator-client.js';
import { MemberAgent } from '../../shared/cluster/member-agent.js';
import { PlacementCache } from '../../shared/cluster/placement-cache.js';
import { isKvfError } from '../../shared/errors.js';
import { BUILTIN_PROFILES } from '../../shared/profiles.js';
import { encodeRecord, EVENT_SUBJECTS, PLACEMENT_KEY, shardSubject } from '../../shared/protocol/cluster.js';
import type { Coordinator } from '../../services/coordinator/coordinator.js';
import { useServers } from '../harness/servers.js';
import {
  cellsOf,
  FAST,
  GiB,
  placementHistory,
  readEvents,
  readTable,
  resetCluster,
  startCoordinator,
  startMember,
  SPEC,
  waitFor,
} from './coordinator-helpers.js';

describe('coordinator (single instance)', () => {
  const fx = useServers({ redis: false });
  let nc: NatsConnection;
  let b: ClusterBuckets;
  let coord: Coordinator;
  let coordNc: NatsConnection;
  const agents: MemberAgent[] = [];

  beforeAll(async () => {
    nc = await connect({ servers: fx.nats.url });
  });
  afterAll(async () => {
    await nc.close();
  });
  beforeEach(async () => {
    b = await resetCluster(nc);
    ({ coord, nc: coordNc } = await startCoordinator(fx.nats.url, 'c1'));
    await waitFor('leadership', () => coord.isLeader());
  });
  afterEach(async () => {
    for (const a of agents.splice(0)) a.halt();
    await coord.stop();
    await coordNc.close();
  });

  /** Start members and wait until the table holds all of them. */
  async function join(...members: [string, number][]): Promise<void> {
    for (const [id, cap] of members) agents.push(await startMember(b, id, cap));
    await waitFor('members in placement', async () => {
      const t = await readTable(b);
      return t !== undefined && members.every(([id]) => t.table.members[id] !== undefined);
    });
  }

  it('places joining members by CAS with an epoch, stamped with the leader term', async () => {
    await join(['n1', GiB], ['n2', GiB], ['n3', 2 * GiB]);
    const { table } = (await readTable(b))!;
    expect(table.term).toBe(coord.term());
    expect(table.leaderId).toBe('c1');
    expect(table.spec).toEqual(SPEC);
    expect(Object.keys(table.cells)).toHaveLength(SPEC.layerGroups * SPEC.seqBuckets);
    for (const c of Object.values(table.cells)) {
      expect(c.replicas).toHaveLength(1);
      expect(['n1', 'n2', 'n3']).toContain(c.replicas[0]);
      expect(c.epoch).toBeLessThanOrEqual(table.epoch);
    }
    // Every node got some cells (32 cells, weights 1:1:2).
    for (const n of ['n1', 'n2', 'n3']) expect(cellsOf(table, n).length).toBeGreaterThan(0);
    const history = await placementHistory(b);
    for (let i = 1; i < history.length; i++) {
      expect(history[i]!.table.epoch).toBe(history[i - 1]!.table.epoch + 1);
    }
    expect(history.at(-1)!.table.epoch).toBe(table.epoch);
  });

  it('declares a silent member dead within nodeDeadAfterMs + bound and moves only its cells', async () => {
    await join(['n1', GiB], ['n2', GiB], ['n3', GiB]);
    const before = (await readTable(b))!.table;
    const victimCells = cellsOf(before, 'n2');
    expect(victimCells.length).toBeGreaterThan(0);

    agents[1]!.halt(); // stops heart-beating, leaves its key: a crash
    const t0 = Date.now();
    const after = await waitFor('n2 removed', async () => {
      const t = (await readTable(b))!.table;
      return t.members.n2 === undefined ? t : undefined;
    });
    const detectMs = Date.now() - t0;
    expect(detectMs).toBeGreaterThanOrEqual(FAST.nodeDeadAfterMs - FAST.heartbeatIntervalMs);
    expect(detectMs).toBeLessThan(FAST.nodeDeadAfterMs + 1500);

    for (const [id, cell] of Object.entries(after.cells)) {
      if (victimCells.includes(id)) {
        expect(cell.replicas).not.toContain('n2');
        expect(cell.replicas).toHaveLength(1);
        expect(cell.epoch).toBeGreaterThan(before.cells[id]!.epoch);
      } else {
        expect(cell).toEqual(before.cells[id]); // untouched: same node, same epoch
      }
    }
    // The member key is gone (deleted by CAS) and the events tell the story.
    expect(await b.members.get('n2').then((e) => e?.operation)).not.toBe('PUT');
    const events = await readEvents(b);
    const dead = events.find((e) => e.subject === EVENT_SUBJECTS.member && e.body.event === 'dead');
    expect(dead?.body).toMatchObject({ nodeId: 'n2', term: coord.term() });
    const move = events.filter((e) => e.subject === EVENT_SUBJECTS.placement).at(-1)!;
    const moves = move.body.moves as { cell: string; from: string[]; to: string[] }[];
    expect(moves.map((m) => m.cell).sort()).toEqual(victimCells);
    expect(moves.every((m) => m.from.join() === 'n2')).toBe(true);
    expect(move.body.epoch).toBe(after.epoch);
  });

  it('a clean leave moves its cells at once; a join takes only the cells the newcomer wins', async () => {
    await join(['n1', GiB], ['n2', GiB]);
    const before = (await readTable(b))!.table;
    await join(['n3', 2 * GiB]);
    const joined = (await readTable(b))!.table;
    const won = cellsOf(joined, 'n3');
    expect(won.length).toBeGreaterThan(0);
    for (const [id, cell] of Object.entries(joined.cells)) {
      if (won.includes(id)) expect(cell.epoch).toBe(joined.epoch);
      else expect(cell).toEqual(before.cells[id]);
    }

    const t0 = Date.now();
    await agents[2]!.stop(); // deletes its key
    const left = await waitFor('n3 left', async () => {
      const t = (await readTable(b))!.table;
      return t.members.n3 === undefined ? t : undefined;
    });
    expect(Date.now() - t0).toBeLessThan(FAST.nodeDeadAfterMs); // no waiting for the dead timeout
    for (const [id, cell] of Object.entries(left.cells)) {
      if (!won.includes(id)) expect(cell).toEqual(joined.cells[id]);
      else expect(cell.replicas[0]).toBe(before.cells[id]!.replicas[0]); // HRW: back where it was
    }
    const kinds = (await readEvents(b))
      .filter((e) => e.subject === EVENT_SUBJECTS.member)
      .map((e) => `${String(e.body.event)}:${String(e.body.nodeId)}`);
    expect(kinds).toEqual(['joined:n1', 'joined:n2', 'joined:n3', 'left:n3']);
  });

  it('a fenced member (key deleted under it) re-joins as a fresh incarnation and its cells get a new epoch', async () => {
    const fenced: { previousIncarnation: string; incarnation: string }[] = [];
    agents.push(await startMember(b, 'n1', GiB));
    agents.push(await startMember(b, 'n2', GiB, { onFenced: (e) => fenced.push(e) }));
    await waitFor('both placed', async () => (await readTable(b))?.table.members.n2 !== undefined);
    const before = (await readTable(b))!.table;
    const oldInc = before.members.n2!.incarnation;

    await b.members.delete('n2'); // what the leader does to a member it declared dead
    await waitFor('fence', () => fenced.length > 0);
    expect(fenced[0]!.previousIncarnation).toBe(oldInc);
    const after = await waitFor('new incarnation placed', async () => {
      const t = (await readTable(b))!.table;
      const m = t.members.n2;
      return m !== undefined && m.incarnation !== oldInc ? t : undefined;
    });
    expect(after.members.n2!.incarnation).toBe(fenced[0]!.incarnation);
    for (const id of cellsOf(after, 'n2'))
      expect(after.cells[id]!.epoch).toBeGreaterThan(before.cells[id]?.epoch ?? 0);
  });

  it('a fenced member re-joins even when its previous record reappears under it (late write, stale read)', async () => {
    const fenced: { previousIncarnation: string; incarnation: string }[] = [];
    // The real members bucket, with one injected race: right before the agent's re-join create,
    // the record of its previous incarnation lands again (a heartbeat sent before the fence, or a
    // replica that has not applied the delete). The agent must take it over, not give up.
    const old: { record?: Uint8Array } = {};
    let injected = false;
    const kv = new Proxy(b.members, {
      get(target, prop, receiver) {
        if (prop === 'create') {
          return async (k: string, data: Uint8Array) => {
            if (!injected && old.record !== undefined) {
              injected = true;
              await target.put(k, old.record);
            }
            return target.create(k, data);
          };
        }
        const v = Reflect.get(target, prop, receiver) as unknown;
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
    const agent = new MemberAgent(kv, {
      heartbeatIntervalMs: FAST.heartbeatIntervalMs,
      onFenced: (e) => fenced.push(e),
    });
    await agent.start({
      nodeId: 'n-late',
      role: 'shard',
      ucxAddress: Buffer.from('ucx-n-late').toString('base64'),
      capacityBytes: GiB,
      usedBytes: 0,
      models: {},
    });
    agents.push(agent);
    const first = await b.members.get('n-late');
    old.record = first!.value;
    await b.members.delete('n-late'); // what the leader does to a member it declared dead
    await waitFor('re-joined as a fresh incarnation', () => fenced.length > 0);
    expect(injected).toBe(true);
    expect(agent.running).toBe(true);
    const now = await b.members.get('n-late');
    expect(now?.operation).toBe('PUT');
    expect(now!.json<{ incarnation: string }>().incarnation).toBe(fenced[0]!.incarnation);
  });

  it('PlacementCache follows the table through the watch', async () => {
    const cache = await PlacementCache.open(b.placement);
    try {
      const changes: number[] = [];
      cache.onChange((t) => changes.push(t.epoch));
      const first = await cache.ready(5000); // the election write exists already
      await join(['n1', GiB]);
      await waitFor('cache sees n1', () => cache.current()?.members.n1 !== undefined);
      const t = cache.current()!;
      expect(t.epoch).toBeGreaterThan(first.epoch);
      expect(changes.at(-1)).toBe(t.epoch);
      expect(cache.nodesFor('0.0')).toEqual(['n1']);
      expect(cache.primaryFor('3.7')).toBe('n1');
      expect(() => cache.nodesFor('9.9')).toThrow(/not in placement/);
      const refreshed = await cache.refresh();
      expect(refreshed?.epoch).toBe(t.epoch);
      expect(cache.revision()).toBe((await readTable(b))!.revision);
    } finally {
      cache.close();
    }
  });

  it('register_model: created, idempotent, PROFILE_CONFLICT, INVALID_PROFILE', async () => {
    const client = new CoordinatorClient(nc, { retryForMs: 5000 });
    const p = { ...BUILTIN_PROFILES['tiny-test']! };
    await expect(client.registerModel(p)).resolves.toEqual({ modelId: 'tiny-test', created: true });
    await expect(client.registerModel({ ...p })).resolves.toEqual({ modelId: 'tiny-test', created: false });
    const conflict = await client.registerModel({ ...p, layers: 8 }).catch((e: unknown) => e);
    expect(isKvfError(conflict, 'PROFILE_CONFLICT')).toBe(true);
    const invalid = await client.registerModel({ ...p, id: 'x', kv_heads: 2 }).catch((e: unknown) => e);
    expect(isKvfError(invalid, 'INVALID_PROFILE')).toBe(true);
    // An id with characters a KV key may not hold is escaped, not refused.
    await expect(client.registerModel({ ...p, id: 'org:model.v1' })).resolves.toMatchObject({
      created: true,
    });
    const status = await client.status();
    expect(status.models).toEqual(['org:model.v1', 'tiny-test']);
    // The conflicting profile changed nothing.
    const stored = await b.models.get('tiny-test');
    expect(JSON.parse(stored!.string())).toMatchObject({ layers: p.layers });
  });

  it('status and placement endpoints answer from the leader', async () => {
    await join(['n1', GiB], ['n2', 3 * GiB]);
    const client = new CoordinatorClient(nc);
    const st = await client.status();
    expect(st.leader).toEqual({ id: 'c1', term: coord.term() });
    expect(st.members.map((m) => m.nodeId)).toEqual(['n1', 'n2']);
    expect(st.members.reduce((a, m) => a + m.primaryCells, 0)).toBe(SPEC.layerGroups * SPEC.seqBuckets);
    expect(st.members.every((m) => m.silentMs < FAST.nodeDeadAfterMs)).toBe(true);
    const pl = await client.placement();
    expect(pl.table.epoch).toBe(st.epoch);
    expect(pl.revision).toBe((await readTable(b))!.revision);
    expect(shardSubject('n1', 'locate')).toBe('kvf.v1.shard.n1.locate');
  });

  it('a stale CAS on the table is refused, and a table from a newer term fences the leader', async () => {
    await join(['n1', GiB]);
    const cur = (await readTable(b))!;
    const myTerm = coord.term()!;
    // A write on an old revision is refused by JetStream.
    await expect(
      b.placement.update(PLACEMENT_KEY, encodeRecord(cur.table), cur.revision - 1),
    ).rejects.toThrow(/wrong last sequence/);
    // Someone with a higher term wrote the table: the leader's next write loses its CAS, it sees
    // the higher term and steps down; then it campaigns again above that term.
    const newer = { ...cur.table, term: myTerm + 100, leaderId: 'intruder', epoch: cur.table.epoch + 1 };
    await b.placement.update(PLACEMENT_KEY, encodeRecord(newer), cur.revision);
    agents.push(await startMember(b, 'n2', GiB)); // makes the leader try to write
    await waitFor('re-elected above the intruder term', () => (coord.term() ?? 0) > myTerm + 100, 10_000);
    const history = await placementHistory(b);
    const intruderAt = history.findIndex((h) => h.table.leaderId === 'intruder');
    // Nothing after the intruder's version was written with a lower term.
    for (const h of history.slice(intruderAt + 1)) expect(h.table.term).toBeGreaterThan(myTerm + 100);
    await waitFor(
      'n2 placed by the new term',
      async () => (await readTable(b))!.table.members.n2 !== undefined,
    );
  });
});
