// Real UCX between real processes: 1 GiB by get and by put over shared memory and over tcp on
// loopback, checked byte for byte by CRC-32C on both sides; then bad arguments in this process.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import {
  Arena,
  crc32c,
  UCX_SYNC_MAX_BYTES_DEFAULT,
  UcxWorker,
  type Endpoint,
  type MemRegion,
} from '../../native/index.js';
import { isKvfError, type ErrorCodeName } from '../../shared/errors.js';
import type { PeerProcess } from '../../services/cli/commands/transfer-peer.js';
import { GiB, MiB, TRANSPORTS, connectPair, spawnPeer } from './helpers/ucx-pair.js';

async function expectCode(p: Promise<unknown> | (() => unknown), code: ErrorCodeName): Promise<void> {
  let caught: unknown;
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (err) {
    caught = err;
  }
  expect(isKvfError(caught), `expected KvfError ${code}, got ${String(caught)}`).toBe(true);
  expect((caught as { codeName: string }).codeName).toBe(code);
}

/**
 * A 1 GiB case: first-touch page faults on the peer's shared segment cost ~20 us each on this VM
 * (262144 of them), and the 2 cores are shared, so allow well past vitest's 120 s default.
 */
const GIB_TEST_TIMEOUT_MS = 300_000;

for (const transport of ['sm', 'tcp'] as const) {
  describe(`UCX 1 GiB over ${transport}`, () => {
    let server: PeerProcess;
    let client: PeerProcess;
    beforeAll(() => {
      server = spawnPeer(TRANSPORTS[transport]);
      client = spawnPeer(TRANSPORTS[transport]);
    });
    afterAll(async () => {
      await Promise.all([server?.stop(), client?.stop()]);
    });

    // The server's side of the get is a registered arena (the shard-node path); of the put, UCX
    // allocated memory. The client's side is UCX-allocated memory read by JS with no copy.
    it(
      'get: 1 GiB from a registered arena in 1 MiB blocks, 8 in flight, byte-exact',
      async () => {
        const remote = await server.request('alloc', { bytes: GiB, mode: 'arena', fill: true });
        const local = await client.request('alloc', { bytes: GiB, fill: false });
        const { ep, rkey } = await connectPair(client, server, remote);
        const run = await client.request('run', {
          ep,
          op: 'get',
          rkey,
          remoteAddress: remote.address,
          remoteLength: remote.length,
          local: local.region,
          blockBytes: MiB,
          inflight: 8,
          window: 2,
          totalBytes: GiB,
        });
        expect(run.bytes).toBe(GiB);
        expect(run.errors).toEqual([]);
        const [a, b] = await Promise.all([
          server.request('crc', { region: remote.region }),
          client.request('crc', { region: local.region }),
        ]);
        expect(b.crc).toBe(a.crc);
        // A one-op transfer too (the single-op API), of a 16 MiB block.
        const one = await client.request('run', {
          ep,
          op: 'get',
          rkey,
          remoteAddress: remote.address,
          remoteLength: remote.length,
          local: local.region,
          blockBytes: 16 * MiB,
          inflight: 1,
          totalBytes: 64 * MiB,
        });
        expect(one.okOps).toBe(4);
      },
      GIB_TEST_TIMEOUT_MS,
    );

    it(
      'put: 1 GiB in 16 MiB blocks, 4 in flight, visible to the peer when put resolves',
      async () => {
        const remote = await server.request('alloc', { bytes: GiB, fill: false });
        const local = await client.request('alloc', { bytes: GiB, fill: true });
        const { ep, rkey } = await connectPair(client, server, remote);
        const run = await client.request('run', {
          ep,
          op: 'put',
          rkey,
          remoteAddress: remote.address,
          remoteLength: remote.length,
          local: local.region,
          blockBytes: 16 * MiB,
          inflight: 4,
          totalBytes: GiB,
        });
        expect(run.bytes).toBe(GiB);
        const [a, b] = await Promise.all([
          server.request('crc', { region: remote.region }),
          client.request('crc', { region: local.region }),
        ]);
        expect(a.crc).toBe(b.crc);
      },
      GIB_TEST_TIMEOUT_MS,
    );
  });
}

describe('UCX bad arguments (in this process)', () => {
  let peer: PeerProcess;
  let worker: UcxWorker;
  let ep: Endpoint;
  let remote: Record<string, unknown>;
  let local: { buffer: Buffer; region: MemRegion };

  beforeAll(async () => {
    peer = spawnPeer(TRANSPORTS.sm);
    // A generous synchronous wait, so the test of it below does not depend on machine load.
    worker = UcxWorker.create({ opTimeoutMs: 5000, syncWaitUs: 200_000 });
    remote = await peer.request('alloc', { bytes: 4 * MiB, fill: true });
    const hello = await peer.request('hello');
    ep = worker.connect(Buffer.from(String(hello.address), 'base64'));
    local = worker.allocBuffer(4 * MiB);
  });
  afterAll(async () => {
    await worker?.close();
    await peer?.stop();
  });

  it('reports its CUDA path and refuses a second worker', async () => {
    expect(['direct', 'staged']).toContain(worker.info().cudaPath);
    expect(worker.info().memoryTypes).toContain('host');
    await expectCode(() => UcxWorker.create(), 'BAD_REQUEST');
  });

  it('a get into an allocBuffer is readable in JS with no copy and matches the peer', async () => {
    const rkey = ep.unpackRkey(Buffer.from(String(remote.rkey), 'base64'));
    await ep.get({
      remoteAddress: BigInt(String(remote.address)),
      rkey,
      local: local.buffer,
      length: 4 * MiB,
    });
    const { crc } = await peer.request('crc', { region: remote.region });
    expect(crc32c(local.buffer)).toBe(crc);
  });

  it('a small same-host get settles before the call returns; a batch over syncMaxBytes through the loop', async () => {
    expect(worker.info().syncWaitUs).toBe(200_000);
    expect(worker.info().syncMaxBytes).toBe(UCX_SYNC_MAX_BYTES_DEFAULT);
    const rkey = ep.unpackRkey(Buffer.from(String(remote.rkey), 'base64'));
    const base = BigInt(String(remote.address));
    const { crc } = await peer.request('crc', { region: remote.region });
    // Settled inside the call: its continuation runs before a setImmediate queued right after.
    for (let k = 0; k < 20; k++) {
      local.buffer.fill(0);
      const p = ep.get({ remoteAddress: base, rkey, local: local.buffer, length: 64 * 1024 });
      const first = await Promise.race([
        p.then(() => 'op'),
        new Promise((r) => setImmediate(() => r('loop'))),
      ]);
      expect(first).toBe('op');
      await p;
    }
    // Over the size limit: no synchronous wait, same bytes.
    const big = Buffer.alloc(8 * MiB);
    expect(big.length).toBeGreaterThan(UCX_SYNC_MAX_BYTES_DEFAULT);
    const results = await ep.getBatch(
      [0, 1].map((k) => ({
        remoteAddress: base,
        rkey,
        local: big,
        localOffset: k * 4 * MiB,
        length: 4 * MiB,
      })),
    );
    expect(results.every((r) => r.ok)).toBe(true);
    expect(crc32c(big.subarray(0, 4 * MiB))).toBe(crc);
    expect(crc32c(big.subarray(4 * MiB))).toBe(crc);
    await expectCode(() => UcxWorker.create({ syncWaitUs: -1 }), 'BAD_REQUEST');
  });

  it('local and remote ranges past the registered region are OUT_OF_RANGE', async () => {
    const rkey = ep.unpackRkey(Buffer.from(String(remote.rkey), 'base64'));
    const base = BigInt(String(remote.address));
    const small = new Uint8Array(1024);
    await expectCode(ep.get({ remoteAddress: base, rkey, local: small, length: 2048 }), 'OUT_OF_RANGE');
    await expectCode(
      ep.get({ remoteAddress: base, rkey, local: small, localOffset: 1000, length: 100 }),
      'OUT_OF_RANGE',
    );
    await expectCode(
      ep.get({ remoteAddress: base + BigInt(4 * MiB - 10), rkey, local: small, length: 100 }),
      'OUT_OF_RANGE',
    );
    await expectCode(ep.put({ remoteAddress: base - 1n, rkey, local: small, length: 100 }), 'OUT_OF_RANGE');
    const results = await ep.getBatch([{ remoteAddress: base, rkey, local: small, length: 1024 }]);
    expect(results).toEqual([{ ok: true }]); // the endpoint still works after refusals
  });

  it('garbage, truncated and corrupted rkeys and addresses are BAD_REQUEST, not crashes', async () => {
    const packed = Buffer.from(String(remote.rkey), 'base64');
    await expectCode(() => ep.unpackRkey(Buffer.alloc(64, 0xab)), 'BAD_REQUEST');
    await expectCode(() => ep.unpackRkey(packed.subarray(0, packed.length - 3)), 'BAD_REQUEST');
    const corrupt = Buffer.from(packed);
    corrupt[corrupt.length - 1] = (corrupt[corrupt.length - 1] ?? 0) ^ 0xff;
    await expectCode(() => ep.unpackRkey(corrupt), 'BAD_REQUEST');
    await expectCode(() => worker.connect(Buffer.alloc(200, 7)), 'BAD_REQUEST');
    await expectCode(
      () => ep.get({ remoteAddress: 1n, rkey: { id: 9999 }, local: new Uint8Array(8), length: 8 }),
      'BAD_REQUEST',
    );
  });

  it('closed arenas, deregistered regions, closed endpoints and a closed worker are CLOSED', async () => {
    const arena = Arena.open({ kind: 'host', blockBytes: MiB, blockCount: 2 });
    const region = worker.registerArena(arena);
    expect(region.length).toBe(2 * MiB);
    expect(region.packRkey().length).toBeGreaterThan(32);
    region.deregister();
    await expectCode(() => region.deregister(), 'CLOSED');
    await expectCode(() => region.packRkey(), 'CLOSED');
    arena.close();
    await expectCode(() => worker.registerArena(arena), 'CLOSED');

    const ep2 = worker.connect(Buffer.from(String((await peer.request('hello')).address), 'base64'));
    const rkey = ep2.unpackRkey(Buffer.from(String(remote.rkey), 'base64'));
    await ep2.close();
    const op = { remoteAddress: BigInt(String(remote.address)), rkey, local: new Uint8Array(8), length: 8 };
    await expectCode(ep2.get(op), 'CLOSED');
    await expectCode(ep2.putBatch([op]), 'CLOSED');

    await worker.close();
    await expectCode(ep.get({ ...op, rkey: { id: 1 } }), 'CLOSED');
    await expectCode(() => worker.registerBuffer(new Uint8Array(16)), 'CLOSED');
    await expectCode(() => worker.allocBuffer(16), 'CLOSED');
    // The allocBuffer memory outlives the worker: JS can still read it.
    expect(local.buffer.length).toBe(4 * MiB);
    expect(crc32c(local.buffer)).toBeTypeOf('number');
    // And a new worker can be created once the old one is closed.
    worker = UcxWorker.create();
    expect(worker.address().length).toBeGreaterThan(32);
  });
});
