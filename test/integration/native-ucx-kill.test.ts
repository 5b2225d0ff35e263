// A peer SIGKILLed in the middle of a transfer: every pending op settles with a typed error
// within the op timeout, the endpoint is marked dead, and the survivor keeps working with another
// live peer. Over tcp (UCX peer error handling) and over shared memory (peer process watch).
import { afterEach, describe, expect, it } from 'vitest';

import type { PeerProcess } from '../../services/cli/commands/transfer-peer.js';
import { MiB, TRANSPORTS, connectPair, spawnPeer } from './helpers/ucx-pair.js';

const OP_TIMEOUT_MS = 3000;
/** Scheduling slack on a loaded 2-core machine on top of the op timeout. */
const SLACK_MS = 2000;

for (const transport of ['tcp', 'sm'] as const) {
  describe(`UCX peer killed over ${transport}`, () => {
    const procs: PeerProcess[] = [];
    afterEach(async () => {
      await Promise.all(procs.splice(0).map((p) => p.stop()));
    });

    it('pending ops reject in time with typed errors; the survivor moves on to a live peer', async () => {
      const env = { ...TRANSPORTS[transport], KVF_PEER_OP_TIMEOUT_MS: String(OP_TIMEOUT_MS) };
      const victim = spawnPeer(env);
      const other = spawnPeer(env);
      const client = spawnPeer(env);
      procs.push(victim, other, client);

      const vRegion = await victim.request('alloc', { bytes: 256 * MiB, fill: true });
      const oRegion = await other.request('alloc', { bytes: 64 * MiB, fill: true });
      const local = await client.request('alloc', { bytes: 256 * MiB });
      const v = await connectPair(client, victim, vRegion);
      const o = await connectPair(client, other, oRegion);

      // An endless transfer: 4 batches of 4 x 4 MiB gets in flight until an op fails.
      const running = client.request('run', {
        ep: v.ep,
        op: 'get',
        rkey: v.rkey,
        remoteAddress: vRegion.address,
        remoteLength: vRegion.length,
        local: local.region,
        blockBytes: 4 * MiB,
        inflight: 4,
        window: 4,
        totalBytes: 2 ** 50,
        stopOnError: true,
      });
      await new Promise((r) => setTimeout(r, 500));
      const killedAt = Date.now();
      victim.child.kill('SIGKILL');
      const res = await running;

      expect(Number(res.okOps)).toBeGreaterThan(0); // it was really mid-transfer
      const errors = res.errors as string[];
      expect(errors.length).toBeGreaterThan(0);
      for (const code of errors) expect(['PEER_UNREACHABLE', 'TIMEOUT']).toContain(code);
      expect(Number(res.settledAtMs) - killedAt).toBeLessThan(OP_TIMEOUT_MS + SLACK_MS);

      // Later ops on the dead endpoint fail at once, typed.
      const t0 = Date.now();
      const again = await client.request('run', {
        ep: v.ep,
        op: 'put',
        rkey: v.rkey,
        remoteAddress: vRegion.address,
        remoteLength: vRegion.length,
        local: local.region,
        blockBytes: MiB,
        inflight: 2,
        totalBytes: 2 * MiB,
        stopOnError: true,
      });
      expect(again.okOps).toBe(0);
      for (const code of again.errors as string[]) expect(['PEER_UNREACHABLE', 'TIMEOUT']).toContain(code);
      expect(Date.now() - t0).toBeLessThan(OP_TIMEOUT_MS + SLACK_MS);

      // The survivor: a full, verified transfer from the other peer.
      const ok = await client.request('run', {
        ep: o.ep,
        op: 'get',
        rkey: o.rkey,
        remoteAddress: oRegion.address,
        remoteLength: oRegion.length,
        local: local.region,
        blockBytes: 4 * MiB,
        inflight: 4,
        totalBytes: 64 * MiB,
      });
      expect(ok.errors).toEqual([]);
      const fresh = await client.request('alloc', { bytes: 64 * MiB });
      await client.request('run', {
        ep: o.ep,
        op: 'get',
        rkey: o.rkey,
        remoteAddress: oRegion.address,
        remoteLength: oRegion.length,
        local: fresh.region,
        blockBytes: 8 * MiB,
        inflight: 8,
        totalBytes: 64 * MiB,
      });
      const [a, b] = await Promise.all([
        other.request('crc', { region: oRegion.region }),
        client.request('crc', { region: fresh.region }),
      ]);
      expect(b.crc).toBe(a.crc);
    });
  });
}

describe('UCX peer paused (SIGSTOP) over tcp', () => {
  const procs: PeerProcess[] = [];
  afterEach(async () => {
    for (const p of procs) p.child.kill('SIGCONT');
    await Promise.all(procs.splice(0).map((p) => p.stop()));
  });

  it('ops to a frozen peer reject with TIMEOUT at the op deadline, and the endpoint is then dead', async () => {
    const env = { ...TRANSPORTS.tcp, KVF_PEER_OP_TIMEOUT_MS: String(OP_TIMEOUT_MS) };
    const frozen = spawnPeer(env);
    const client = spawnPeer(env);
    procs.push(frozen, client);
    const region = await frozen.request('alloc', { bytes: 64 * MiB, fill: true });
    const local = await client.request('alloc', { bytes: 64 * MiB });
    const c = await connectPair(client, frozen, region);
    const args = {
      ep: c.ep,
      op: 'get',
      rkey: c.rkey,
      remoteAddress: region.address,
      remoteLength: region.length,
      local: local.region,
      blockBytes: 4 * MiB,
      inflight: 4,
      stopOnError: true,
    };
    const warm = await client.request('run', { ...args, totalBytes: 16 * MiB });
    expect(warm.errors).toEqual([]);

    frozen.child.kill('SIGSTOP');
    await new Promise((r) => setTimeout(r, 200)); // kill() returns before the peer has stopped
    const t0 = Date.now();
    const res = await client.request('run', { ...args, totalBytes: 64 * MiB });
    const elapsed = Date.now() - t0;
    expect(res.okOps).toBe(0);
    expect((res.errors as string[]).length).toBe(4);
    for (const code of res.errors as string[]) expect(code).toBe('TIMEOUT');
    expect(elapsed).toBeGreaterThanOrEqual(OP_TIMEOUT_MS - 100);
    expect(elapsed).toBeLessThan(OP_TIMEOUT_MS + SLACK_MS);
    // The timed-out endpoint was force-closed: later ops fail at once instead of waiting again.
    const t1 = Date.now();
    const again = await client.request('run', { ...args, totalBytes: 4 * MiB });
    expect(again.okOps).toBe(0);
    expect(Date.now() - t1).toBeLessThan(1000);
  });
});
