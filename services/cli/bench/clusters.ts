/** Starting the real fabric for the bench: a local cluster and one SDK client on it. */
import { startLocalCluster, type LocalCluster } from '../../../shared/local-cluster.js';
import type { ModelProfile } from '../../../shared/profiles.js';
import { connect, type KvfClient } from '../../../shared/sdk/mod.js';

/**
 * The trace's scaled-down model: 512-token chunks (one per trace block), 2 layers in 2 layer
 * groups, 1 KV head of dim 2, fp16: 4 KiB blocks, 8 KiB per chunk, so the whole trace's working
 * set (~44k blocks) is ~340 MiB per store.
 */
export const TRACE_PROFILE: ModelProfile = {
  id: 'bench-trace',
  layers: 2,
  kvHeads: 1,
  headDim: 2,
  dtype: 'fp16',
  chunkTokens: 512,
};

export interface Fabric {
  cluster: LocalCluster;
  kvf: KvfClient;
  stop(): Promise<void>;
}

/** Child-process logs kept for an error message (the bench's stdout stays clean). */
const LOG_LINES_MAX = 200;

export async function startFabric(o: {
  shards: number;
  arenaBytes: number;
  models: string[];
  register?: ModelProfile[];
  /** Copies per cell. @default the cluster default (2) */
  replicationFactor?: number;
  log: (line: string) => void;
}): Promise<Fabric> {
  const lines: string[] = [];
  let cluster: LocalCluster;
  try {
    cluster = await startLocalCluster({
      shards: o.shards,
      arenaBytes: o.arenaBytes,
      models: o.models,
      // Production-like liveness: multi-GiB puts stall a node's event loop for seconds on this
      // VM (page faults at ~20 us per 4 KiB page), which the test clusters' 1 s timeout would
      // wrongly call a death.
      heartbeatIntervalMs: 500,
      nodeDeadAfterMs: 10_000,
      ...(o.replicationFactor === undefined
        ? {}
        : { env: { KVFABRIC_COORDINATOR_REPLICATION_FACTOR: String(o.replicationFactor) } }),
      log: (l) => {
        lines.push(l);
        if (lines.length > LOG_LINES_MAX) lines.shift();
      },
    });
  } catch (err) {
    o.log(lines.slice(-40).join('\n'));
    throw err;
  }
  let kvf: KvfClient | undefined;
  try {
    kvf = await connect({
      natsServers: cluster.natsUrl,
      redisUrl: cluster.redisUrl,
      keyPrefix: cluster.config.redis.keyPrefix,
    });
    for (const p of o.register ?? []) await kvf.registerModel(p);
  } catch (err) {
    await kvf?.close();
    await cluster.stop();
    o.log(lines.slice(-40).join('\n'));
    throw err;
  }
  const client = kvf;
  return {
    cluster,
    kvf: client,
    async stop() {
      await client.close();
      await cluster.stop();
    },
  };
}
