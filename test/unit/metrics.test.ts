import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../shared/config.js';
import { Readiness } from '../../shared/metrics/health-server.js';
import { createMetrics, LATENCY_BUCKETS_S, METRIC_NAMES } from '../../shared/metrics/registry.js';
import {
  clientSource,
  countPromotions,
  placementPromotions,
  recordEvictions,
  recordPull,
  shardNodeSource,
} from '../../shared/metrics/sources.js';
import type { PlacementTable } from '../../shared/protocol/cluster.js';
import { ucxNetDevices, applyUcxNetDevices } from '../../shared/ucx-env.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** `name` -> value of every sample line `name{labels} value` (labels as written). */
function samples(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || line.trim() === '') continue;
    const i = line.lastIndexOf(' ');
    out.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return out;
}

function table(epoch: number, cells: Record<string, string[]>, leaderId = 'c1'): PlacementTable {
  return {
    epoch,
    term: 1,
    leaderId,
    spec: { layerGroups: 1, seqBuckets: 2, seqBucketTokens: 16 },
    replicationFactor: 2,
    cells: Object.fromEntries(Object.entries(cells).map(([k, r]) => [k, { replicas: r, epoch }])),
    members: {},
    reason: 'test',
    updatedAt: 0,
  };
}

describe('metrics contract', () => {
  it('exports exactly the names, types and labels of docs/operations.md', async () => {
    const doc = readFileSync(path.join(repo, 'docs/operations.md'), 'utf8');
    const section = doc.slice(doc.indexOf('## Metrics'));
    const rows = section
      .split('\n')
      .filter((l) => /^\| `kvfabric_/.test(l))
      .map((l) =>
        l
          .slice(1, -1)
          .split('|')
          .map((c) => c.trim()),
      );
    const documented = new Map(
      rows.map(([name, type, labels]) => [
        (name ?? '').replace(/`/g, ''),
        { type, labels: [...(labels ?? '').replace(/\([^)]*\)/g, '').matchAll(/`(\w+)`/g)].map((m) => m[1]) },
      ]),
    );
    expect(documented.size).toBeGreaterThanOrEqual(12);
    const m = createMetrics({ processMetrics: false });
    const exported = await m.registry.getMetricsAsJSON();
    const ours = new Map(exported.map((e) => [e.name, e]));
    expect([...ours.keys()].sort()).toEqual([...documented.keys()].sort());
    expect(Object.values(METRIC_NAMES).sort()).toEqual([...documented.keys()].sort());
    const text = await m.text();
    for (const [name, d] of documented) {
      expect(text).toContain(`# TYPE ${name} ${d.type}`);
      const labelNames = (m.registry.getSingleMetric(name) as unknown as { labelNames: string[] }).labelNames;
      expect([...labelNames].sort(), name).toEqual([...d.labels].sort());
    }
    expect(section.replace(/\s+/g, ' ')).toContain(LATENCY_BUCKETS_S.join(', '));
  });

  it('adds direct tallies and scrape-time sources without double counting', async () => {
    const m = createMetrics({ processMetrics: false });
    recordEvictions(m, [{ reason: 'capacity' }, { reason: 'capacity' }, { reason: 'ttl' }]);
    recordPull(m, { statuses: ['stored', 'stored', 'present', 'checksum_mismatch'], bytes: 4096 });
    const stats = {
      lookups: { requestedTokens: 100, hitTokens: 40 },
      gets: { requestedTokens: 50, hitTokens: 20, bytes: 1000, checksumFailures: 2 },
      puts: { bytes: 300 },
    };
    m.addSource(clientSource({ stats: () => stats }, { get: 7, put: 3 }));
    let s = samples(await m.text());
    expect(s.get('kvfabric_prefix_cache_queries_total')).toBe(150);
    expect(s.get('kvfabric_prefix_cache_hits_total')).toBe(60);
    expect(s.get('kvfabric_bytes_transferred_total{direction="get"}')).toBe(1000);
    expect(s.get('kvfabric_bytes_transferred_total{direction="put"}')).toBe(300);
    expect(s.get('kvfabric_bytes_transferred_total{direction="replicate"}')).toBe(4096);
    expect(s.get('kvfabric_blocks_transferred_total{direction="replicate"}')).toBe(2);
    expect(s.get('kvfabric_blocks_transferred_total{direction="get"}')).toBe(7);
    expect(s.get('kvfabric_checksum_failures_total')).toBe(3);
    expect(s.get('kvfabric_evictions_total{reason="capacity"}')).toBe(2);
    expect(s.get('kvfabric_evictions_total{reason="ttl"}')).toBe(1);
    // A second scrape after the source grew: cumulative, not added twice.
    stats.gets.bytes = 1500;
    s = samples(await m.text());
    expect(s.get('kvfabric_bytes_transferred_total{direction="get"}')).toBe(1500);
    expect(s.get('kvfabric_evictions_total{reason="capacity"}')).toBe(2);
  });

  it('reads arenas and the epoch of a shard node', async () => {
    const m = createMetrics({ processMetrics: false });
    const arena = (used: number) => ({
      slotBytes: 1024,
      capacityBytes: () => 8 * 1024,
      store: { stats: () => ({ capacitySlots: 8, freeSlots: 8 - used }) },
    });
    const node = { models: new Map([['tiny-test', arena(3)]]), placement: { epoch: () => 7 } };
    m.addSource(shardNodeSource(node));
    const s = samples(await m.text());
    expect(s.get('kvfabric_arena_used_bytes{model="tiny-test"}')).toBe(3 * 1024);
    expect(s.get('kvfabric_arena_capacity_bytes{model="tiny-test"}')).toBe(8 * 1024);
    expect(s.get('kvfabric_placement_epoch')).toBe(7);
  });

  it('counts promotions once, on the coordinator that wrote the table', async () => {
    const a = table(1, { '0.0': ['n1', 'n2'], '0.1': ['n2', 'n3'] });
    const b = table(2, { '0.0': ['n2', 'n3'], '0.1': ['n2', 'n3'] }); // n1 died: n2 promoted in 0.0
    expect(countPromotions(a, b)).toBe(1);
    // A new primary that was not a replica is a move, not a promotion.
    expect(countPromotions(a, table(2, { '0.0': ['n4', 'n2'], '0.1': ['n2', 'n3'] }))).toBe(0);
    const leader = createMetrics({ processMetrics: false });
    const standby = createMetrics({ processMetrics: false });
    for (const [metrics, id] of [
      [leader, 'c1'],
      [standby, 'c2'],
    ] as const) {
      const f = placementPromotions(metrics, id);
      f.observe(a);
      f.observe(b);
      f.observe(a); // an older table arriving late changes nothing
    }
    const l = samples(await leader.text());
    const sb = samples(await standby.text());
    expect(l.get('kvfabric_failovers_total')).toBe(1);
    expect(sb.get('kvfabric_failovers_total')).toBe(0);
    expect(l.get('kvfabric_placement_epoch')).toBe(2);
    expect(sb.get('kvfabric_placement_epoch')).toBe(2);
  });
});

describe('readiness', () => {
  it('lists every failing check, and stays not ready once draining', () => {
    let nats = true;
    const r = new Readiness()
      .add('nats', () => (nats ? undefined : 'nats down'))
      .add('broken', () => {
        throw new Error('boom');
      });
    expect(r.reasons()).toEqual(['broken check failed: boom']);
    r.add('broken', () => undefined);
    expect(r.ready()).toBe(true);
    nats = false;
    expect(r.reasons()).toEqual(['nats down']);
    nats = true;
    r.setDraining();
    expect(r.ready()).toBe(false);
    expect(r.reasons()).toEqual(['draining (SIGTERM received)']);
  });
});

describe('ucx.netDevices', () => {
  it('config wins, then UCX_NET_DEVICES, then loopback only', () => {
    expect(ucxNetDevices(parseConfig({}), {})).toBe('lo');
    expect(ucxNetDevices(parseConfig({}), { UCX_NET_DEVICES: 'mlx5_0:1' })).toBe('mlx5_0:1');
    expect(ucxNetDevices(parseConfig({ ucx: { netDevices: 'eth1' } }), { UCX_NET_DEVICES: 'all' })).toBe(
      'eth1',
    );
    const env: NodeJS.ProcessEnv = {};
    expect(applyUcxNetDevices(parseConfig({ ucx: { netDevices: 'eth1,eth2' } }), undefined, env)).toBe(
      'eth1,eth2',
    );
    expect(env.UCX_NET_DEVICES).toBe('eth1,eth2');
    expect(() => parseConfig({ ucx: { netDevices: 'eth1; rm -rf' } })).toThrow(/ucx.netDevices/);
  });
});
