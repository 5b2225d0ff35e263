/**
 * A shard node that cannot reach JetStream (two of three nats-servers killed: no quorum, so no
 * heartbeat lands and no KV read answers, while core NATS requests still flow through the third
 * server) keeps serving reads of the blocks it holds, and refuses writes (FENCED) because it
 * cannot confirm its membership. Before, locate self-fenced too and every read missed for the
 * whole JetStream outage (the chaos kill-nats-server scenario lost every acknowledged chunk in
 * its final re-read while the meta leader was being re-elected).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jetstreamManager } from '@nats-io/jetstream';
import { isKvfError } from '../../shared/errors.js';
import {
  decodePlacementTable,
  EVENT_SUBJECTS,
  LEADER_BUCKET,
  MEMBERS_BUCKET,
  PLACEMENT_KEY,
} from '../../shared/protocol/cluster.js';
import { allocateReplySchema } from '../../shared/protocol/shard.js';
import { useLocalCluster, waitFor } from '../harness/cluster.js';
import { cellOf, makeBlocks, RawClient } from './replication-helpers.js';

const MODEL = 'tiny-test';
const GROUPS = 4;
const BUCKETS = 16;

describe('shard node reads through a JetStream outage (3 nats-servers, 2 killed)', () => {
  const fx = useLocalCluster({
    shards: 2,
    natsCluster: 3,
    heartbeatIntervalMs: 200,
    nodeDeadAfterMs: 1000, // self-fence after 500 ms of heartbeat silence
    arenaBytes: 16 * 1024 ** 2,
  });
  let c: RawClient;

  beforeAll(async () => {
    // The test client stays on server 0, the one that survives.
    c = await RawClient.open(fx.cluster.natsCluster!.urls[0]!, MODEL);
    await waitFor('placement with rf 2', () => {
      const t = c.placement.current();
      return t !== undefined && Object.values(t.cells).every((x) => x.replicas.length === 2);
    });
  }, 60_000);
  afterAll(async () => {
    await c?.close();
  });

  it('locate keeps answering while heartbeats fail; allocate is FENCED', async () => {
    const blocks = makeBlocks('js-outage', 4, GROUPS, BUCKETS, () => 2048);
    expect((await c.put(blocks, 'all')).committed).toBe(blocks.length);
    const b = blocks[0]!;
    const primary = c.table().cells[cellOf(b)]!.replicas[0]!;
    const before = await c.locate(primary, [b]);
    expect(before.blocks[0]!.found).toBe(true);

    const nats = fx.cluster.natsCluster!;
    await nats.kill(1);
    await nats.kill(2);
    try {
      const allocate = () =>
        c.call(
          primary,
          'allocate',
          {
            model: MODEL,
            epoch: c.table().epoch,
            blocks: [{ hash: 'f'.repeat(64), g: b.g, i: 0, parent: '', s: b.s }],
          },
          allocateReplySchema,
        );
      // Writes: refused once the node's heartbeat silence passed selfFenceAfterMs.
      await waitFor(
        'the node refuses writes (cannot confirm membership)',
        () =>
          allocate().then(
            () => false,
            (err: unknown) => isKvfError(err, 'FENCED'),
          ),
        15_000,
      );
      // Reads: still served, same block, same checksum.
      const during = await c.locate(primary, [b]);
      expect(during.blocks[0]!.found).toBe(true);
      expect(during.blocks[0]!.checksum).toBe(before.blocks[0]!.checksum);
    } finally {
      await nats.restart(1);
      await nats.restart(2);
    }
  }, 90_000);

  it('members are not declared dead for the silence of a members-bucket outage the leader outlived', async () => {
    const nats = fx.cluster.natsCluster!;
    await nats.waitForMetaLeader(30_000);
    const jsm = await jetstreamManager(c.nc);
    const leaderOf = async (stream: string): Promise<string | undefined> =>
      (await jsm.streams.info(stream).catch(() => undefined))?.cluster?.leader;
    const stepDown = (stream: string) =>
      c.nc.request(`$JS.API.STREAM.LEADER.STEPDOWN.${stream}`, '', { timeout: 5000 }).catch(() => undefined);
    // The members bucket's stream leader must be a server other than the test client's (n1) and
    // other than the leader-lease bucket's: killing it then silences every heartbeat while the
    // coordinator keeps its lease.
    const MEMBERS = `KV_${MEMBERS_BUCKET}`;
    const LEASE = `KV_${LEADER_BUCKET}`;
    await waitFor(
      'members stream led by n2 or n3, lease stream led elsewhere',
      async () => {
        const m = await leaderOf(MEMBERS);
        const l = await leaderOf(LEASE);
        if (m === undefined || l === undefined) return false;
        if (m.endsWith('-n1')) await stepDown(MEMBERS);
        else if (l === m) await stepDown(LEASE);
        else return true;
        return false;
      },
      30_000,
    );
    const victim = Number((await leaderOf(MEMBERS))!.slice(-1)) - 1;
    await waitFor('both nodes heartbeating, table settled', async () => {
      const t = c.table();
      return (
        Object.keys(t.members).length === 2 && (await c.stats(fx.cluster.shards[0]!.nodeId)) !== undefined
      );
    });
    const before = c.table();
    const dead: string[] = [];
    const sub = c.nc.subscribe(EVENT_SUBJECTS.member, {
      callback: (_e, msg) => {
        const ev = msg.json<{ event: string; nodeId: string }>();
        if (ev.event === 'dead') dead.push(ev.nodeId);
      },
    });
    try {
      await nats.kill(victim);
      // Heartbeats fail until the members stream elects a new leader (seconds, > nodeDeadAfterMs).
      await new Promise((r) => setTimeout(r, 4000));
      await nats.restart(victim);
      await nats.waitForMetaLeader(30_000);
      // Well past nodeDeadAfterMs after the bucket took writes again.
      await new Promise((r) => setTimeout(r, 3000));
      const fresh = decodePlacementTable((await c.buckets.placement.get(PLACEMENT_KEY))!.value);
      expect(dead).toEqual([]);
      for (const [id, m] of Object.entries(before.members))
        expect(fresh.members[id]?.incarnation, `${id} kept its incarnation`).toBe(m.incarnation);
    } finally {
      sub.unsubscribe();
    }
  }, 120_000);
});
