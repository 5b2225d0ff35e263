/**
 * Physical limits measured in the same run, so the strategies' rates can be read as a fraction of
 * what this host can do at all:
 *
 * - memcpy: native single-thread memcpy bandwidth (the ceiling for any copy into the worker);
 * - UCX: `kvfabric bench transfer`'s runner (services/cli/commands/bench-transfer.ts), one case:
 *   its kvfabric one-sided get between two processes and untuned `ucx_perftest` ucp_get, same size;
 * - iperf3 on loopback, when installed (the TCP ceiling); reported absent otherwise.
 */
import { spawn, spawnSync } from 'node:child_process';
import { memcpyBench } from '../../../native/index.js';
import { freePort } from '../../../shared/local-servers.js';
import { parseBenchArgs, runBenchTransfer } from '../commands/bench-transfer.js';

export interface LimitsOptions {
  /** Block size of the memcpy and UCX cases. @default 4 MiB */
  blockBytes: number;
  /** Bytes per memcpy / UCX case. @default 256 MiB (quick: 64 MiB) */
  bytesPerCase: number;
  /** UCX transport of the transfer case ('sm' shared memory or 'tcp' on lo). @default 'sm' */
  transport: 'sm' | 'tcp';
  /** Skip the UCX case (peers, ucx_perftest). */
  skipUcx: boolean;
  /** iperf3 client run time. @default 2 s */
  iperfSeconds: number;
}

export interface LimitsResult {
  memcpyGbps: number;
  ucx: {
    transport: string;
    blockBytes: number;
    /** kvfabric's UCX get between two processes (bench transfer), GB/s; null when skipped or failed. */
    kvfabricGetGbps: number | null;
    /** ucx_perftest ucp_get, GB/s; null when absent or failed. */
    perftestGbps: number | null;
    error?: string;
  };
  iperf3: { present: boolean; gbps: number | null; note: string };
}

function hasBinary(name: string, versionFlag: string): boolean {
  const r = spawnSync(name, [versionFlag], { stdio: 'ignore', timeout: 5000 });
  return !r.error;
}

/** iperf3 -c 127.0.0.1 against a one-shot server, GB/s (bits converted to bytes). */
async function iperf3Gbps(seconds: number): Promise<number | null> {
  const port = await freePort();
  const server = spawn('iperf3', ['-s', '-1', '-B', '127.0.0.1', '-p', String(port)], { stdio: 'ignore' });
  try {
    await new Promise((r) => setTimeout(r, 500));
    const c = spawnSync('iperf3', ['-c', '127.0.0.1', '-p', String(port), '-t', String(seconds), '-J'], {
      encoding: 'utf8',
      timeout: (seconds + 10) * 1000,
    });
    const j = JSON.parse(c.stdout) as { end?: { sum_received?: { bits_per_second?: number } } };
    const bps = j.end?.sum_received?.bits_per_second;
    return typeof bps === 'number' ? bps / 8 / 1e9 : null;
  } catch {
    return null;
  } finally {
    server.kill('SIGKILL');
  }
}

export async function measureLimits(o: LimitsOptions): Promise<LimitsResult> {
  const iterations = Math.max(4, Math.floor(o.bytesPerCase / o.blockBytes));
  const memcpyGbps = memcpyBench(o.blockBytes, iterations).gbps;
  const ucx: LimitsResult['ucx'] = {
    transport: o.transport,
    blockBytes: o.blockBytes,
    kvfabricGetGbps: null,
    perftestGbps: null,
  };
  if (!o.skipUcx) {
    try {
      const rows = await runBenchTransfer(
        parseBenchArgs([
          '--sizes',
          String(o.blockBytes),
          '--transports',
          o.transport,
          '--ops',
          'get',
          '--inflight',
          '8',
          '--bytes-per-case',
          String(o.bytesPerCase),
          ...(hasBinary('ucx_perftest', '-h') ? [] : ['--no-perftest']),
        ]),
      );
      ucx.kvfabricGetGbps = rows[0]?.gbps ?? null;
      ucx.perftestGbps = rows[0]?.perftestGbps ?? null;
    } catch (err) {
      ucx.error = err instanceof Error ? err.message : String(err);
    }
  }
  const present = hasBinary('iperf3', '--version');
  const iperf3 = present
    ? { present, gbps: await iperf3Gbps(o.iperfSeconds), note: 'iperf3 TCP on 127.0.0.1' }
    : { present, gbps: null, note: 'iperf3 not installed: loopback TCP limit not measured' };
  return { memcpyGbps, ucx, iperf3 };
}
