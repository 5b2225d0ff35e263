/**
 * Placement metrics for processes that do not otherwise follow the table (coordinators): a
 * JetStream watch of kvf_placement that feeds kvfabric_placement_epoch and, on the coordinator
 * that wrote each table, kvfabric_failovers_total (replicas promoted to primary).
 */
import type { NatsConnection } from '@nats-io/transport-node';
import { Kvm } from '@nats-io/kv';
import { PlacementCache } from '../cluster/placement-cache.js';
import type { Logger } from '../log.js';
import { PLACEMENT_BUCKET } from '../protocol/cluster.js';
import type { KvfMetrics } from './registry.js';
import { placementPromotions } from './sources.js';

export interface PlacementWatch {
  close(): void;
}

export async function watchPlacementMetrics(
  nc: NatsConnection,
  metrics: KvfMetrics,
  selfId: string,
  log?: Logger,
): Promise<PlacementWatch> {
  // Bind only: the coordinator created the bucket (with its configured replicas) before this runs.
  const kv = await new Kvm(nc).open(PLACEMENT_BUCKET);
  const cache = await PlacementCache.open(kv, log ? { logger: log } : {});
  const follower = placementPromotions(metrics, selfId);
  const first = cache.current();
  if (first !== undefined) follower.observe(first);
  const off = cache.onChange((table) => follower.observe(table));
  return {
    close: () => {
      off();
      cache.close();
    },
  };
}
