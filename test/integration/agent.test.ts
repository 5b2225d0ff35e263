/**
 * The local agent against a real 2-node cluster: shared-memory put/get byte-exact, layer-group
 * events, typed errors that change nothing (bad frames, unknown ops, versions, regions out of
 * range or not owned, CUDA IPC without a GPU), and one engine connection failing without
 * disturbing another.
 */
import { existsSync, openSync, readSync, writeSync, closeSync } from 'node:fs';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useLocalCluster } from '../harness/cluster.js';
import { AgentConn, startAgent, type AgentProcess } from './agent-helpers.js';

const MODEL = 'tiny-test';
const fixture = useLocalCluster({ shards: 2 });

let agent: AgentProcess;
let dir: string;

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'kvf-agent-'));
  agent = await startAgent(fixture.cluster, path.join(dir, 'agent.sock'));
}, 60_000);

afterAll(async () => {
  await agent?.stop();
  rmSync(dir, { recursive: true, force: true });
});

function tokensFor(seed: number, n: number): number[] {
  return Array.from({ length: n }, (_, i) => (seed * 7919 + i * 104729) % 128_000);
}

function fillPattern(bytes: number, seed: number): Buffer {
  const b = Buffer.alloc(bytes);
  for (let i = 0; i < bytes; i++) b[i] = (i * 31 + seed * 17 + (i >> 8)) & 0xff;
  return b;
}

function writeRegion(file: string, data: Buffer, at = 0): void {
  const fd = openSync(file, 'r+');
  writeSync(fd, data, 0, data.length, at);
  closeSync(fd);
}

function readRegion(file: string, bytes: number, at = 0): Buffer {
  const fd = openSync(file, 'r');
  const b = Buffer.alloc(bytes);
  readSync(fd, b, 0, bytes, at);
  closeSync(fd);
  return b;
}

interface Layout {
  blockBytes: number[];
  chunkTokens: number;
}

async function layoutOf(c: AgentConn): Promise<Layout> {
  return (await c.ok('layout', { model: MODEL })) as unknown as Layout;
}

function offsetsFor(l: Layout, chunks: number, base = 0): number[] {
  let at = base;
  return l.blockBytes.map((bb) => {
    const o = at;
    at += bb * chunks;
    return o;
  });
}

describe('kvfabric agent', () => {
  it('puts from and gets into shared memory byte-exact, with layer-group events', async () => {
    const c = await AgentConn.open(agent.socketPath);
    const hello = await c.ok('hello', { client: 'test' });
    expect(hello.protocol).toBe(1);
    expect((hello.cuda as { available: boolean }).available).toBe(false);
    const l = await layoutOf(c);
    const chunks = 3;
    const bytes = l.blockBytes.reduce((a, b) => a + b, 0) * chunks;
    const src = (await c.ok('region_create', { bytes })) as { region: number; path: string };
    const dst = (await c.ok('region_create', { bytes })) as { region: number; path: string };
    const tokens = tokensFor(1, chunks * l.chunkTokens + 5);
    const data = fillPattern(bytes, 1);
    writeRegion(src.path, data);
    const put = await c.ok('put', {
      model: MODEL,
      tokens,
      region: src.region,
      offsets: offsetsFor(l, chunks),
    });
    expect(put.tokensIndexed).toBe(chunks * l.chunkTokens);
    expect((await c.ok('lookup', { model: MODEL, tokens })).tokens).toBe(chunks * l.chunkTokens);

    const id = c.send('get', {
      model: MODEL,
      tokens,
      region: dst.region,
      offsets: offsetsFor(l, chunks),
      events: true,
    });
    const reply = await c.next((r) => r.id === id && r.event === undefined);
    expect(reply.ok).toBe(true);
    expect(reply.result?.tokens).toBe(chunks * l.chunkTokens);
    const events = [];
    for (let g = 0; g < l.blockBytes.length; g++)
      events.push(await c.next((r) => r.id === id && r.event === 'group', 100));
    expect(events.map((e) => e.group).sort()).toEqual(l.blockBytes.map((_, g) => g));
    expect(readRegion(dst.path, bytes).equals(data)).toBe(true);

    const many = await c.ok('lookup_many', { model: MODEL, prompts: [tokens, tokensFor(2, 40)] });
    expect(many.tokens).toEqual([chunks * l.chunkTokens, 0]);
    const stats = (await c.ok('stats', {})) as {
      agent: { regions: number };
      sdk: { puts: { count: number } };
    };
    expect(stats.agent.regions).toBeGreaterThanOrEqual(2);
    expect(stats.sdk.puts.count).toBeGreaterThanOrEqual(1);
    c.close();
  });

  it('answers bad frames, unknown ops, wrong versions and out-of-range regions with typed errors and changes nothing', async () => {
    const c = await AgentConn.open(agent.socketPath);
    const l = await layoutOf(c);
    const bytes = l.blockBytes.reduce((a, b) => a + b, 0) * 2;
    const r = (await c.ok('region_create', { bytes })) as { region: number; path: string };
    const sentinel = fillPattern(bytes, 9);
    writeRegion(r.path, sentinel);

    c.sendBody('{not json');
    expect((await c.next((f) => f.id === null)).error?.name).toBe('MALFORMED');
    expect((await c.request('teleport', {})).error?.name).toBe('UNKNOWN_OPERATION');
    const vid = c.send('hello', {}, { v: 2 });
    expect((await c.next((f) => f.id === vid)).error?.name).toBe('VERSION_MISMATCH');
    expect(
      (await c.request('get', { model: MODEL, tokens: 'x', region: r.region, offsets: [0] })).error?.name,
    ).toBe('BAD_REQUEST');
    expect((await c.request('lookup', { model: MODEL, tokens: [1], extra: 1 })).error?.name).toBe(
      'BAD_REQUEST',
    );

    // Slots past the region's end, the wrong number of layer groups, a region that does not exist.
    const tokens = tokensFor(3, 2 * l.chunkTokens);
    const off = offsetsFor(l, 2, 1);
    expect(
      (await c.request('get', { model: MODEL, tokens, region: r.region, offsets: off })).error?.name,
    ).toBe('OUT_OF_RANGE');
    expect(
      (await c.request('get', { model: MODEL, tokens, region: r.region, offsets: [0] })).error?.name,
    ).toBe(l.blockBytes.length === 1 ? undefined : 'SHAPE_MISMATCH');
    expect(
      (await c.request('put', { model: MODEL, tokens, region: 999, offsets: offsetsFor(l, 2) })).error?.name,
    ).toBe('OUT_OF_RANGE');
    expect((await c.request('region_create', { bytes: 2 ** 50 })).error?.name).toBe('OUT_OF_RANGE');
    expect(
      (await c.request('cuda_ipc_open', { handle: Buffer.alloc(64).toString('base64'), bytes: 4096 })).error
        ?.name,
    ).toBe('CUDA_UNAVAILABLE');
    // Nothing changed: the region's bytes, and nothing was stored for those tokens.
    expect(readRegion(r.path, bytes).equals(sentinel)).toBe(true);
    expect((await c.ok('lookup', { model: MODEL, tokens })).tokens).toBe(0);
    // The connection still works.
    expect((await c.ok('hello', {})).protocol).toBe(1);

    // Another connection cannot see or free this one's region.
    const other = await AgentConn.open(agent.socketPath);
    expect((await other.request('region_free', { region: r.region })).error?.name).toBe('OUT_OF_RANGE');
    expect(
      (await other.request('get', { model: MODEL, tokens, region: r.region, offsets: offsetsFor(l, 2) }))
        .error?.name,
    ).toBe('OUT_OF_RANGE');
    other.close();
    expect(existsSync(r.path)).toBe(true);
    await c.ok('region_free', { region: r.region });
    expect(existsSync(r.path)).toBe(false);
    c.close();
  });

  it('an oversized frame ends only that connection; a crashed engine leaves others alone and its regions are freed', async () => {
    const a = await AgentConn.open(agent.socketPath);
    const b = await AgentConn.open(agent.socketPath);
    const l = await layoutOf(a);
    const chunks = 2;
    const bytes = l.blockBytes.reduce((x, y) => x + y, 0) * chunks;
    const ra = (await a.ok('region_create', { bytes })) as { region: number; path: string };
    const rb = (await b.ok('region_create', { bytes })) as { region: number; path: string };
    const tokens = tokensFor(4, chunks * l.chunkTokens);
    const data = fillPattern(bytes, 4);
    writeRegion(ra.path, data);
    await a.ok('put', { model: MODEL, tokens, region: ra.region, offsets: offsetsFor(l, chunks) });

    // b starts a get and dies mid-flight (the engine crashed).
    b.send('get', { model: MODEL, tokens, region: rb.region, offsets: offsetsFor(l, chunks) });
    b.close();
    // a is undisturbed.
    const dst = (await a.ok('region_create', { bytes })) as { region: number; path: string };
    const got = await a.ok('get', {
      model: MODEL,
      tokens,
      region: dst.region,
      offsets: offsetsFor(l, chunks),
    });
    expect(got.tokens).toBe(chunks * l.chunkTokens);
    expect(readRegion(dst.path, bytes).equals(data)).toBe(true);
    // b's region was freed once its get settled.
    const deadline = Date.now() + 5000;
    while (existsSync(rb.path) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(existsSync(rb.path)).toBe(false);

    // A declared length past frameBytesMax: error, then the agent closes that connection only.
    const huge = Buffer.alloc(4);
    huge.writeUInt32BE(0xffff_fff0, 0);
    const c = await AgentConn.open(agent.socketPath);
    c.sendRaw(huge);
    expect((await c.next((f) => f.id === null)).error?.name).toBe('PAYLOAD_TOO_LARGE');
    await expect(c.next(() => false, 3000)).rejects.toThrow(/closed/);
    expect((await a.ok('hello', {})).protocol).toBe(1);
    a.close();
  });

  it('SIGTERM drains: every request sent before it is answered (ok, or CLOSED once draining), then exit 0', async () => {
    const second = await startAgent(fixture.cluster, path.join(dir, 'drain.sock'));
    const c = await AgentConn.open(second.socketPath);
    const l = await layoutOf(c);
    const chunks = 2;
    const bytes = l.blockBytes.reduce((a, b) => a + b, 0) * chunks;
    const src = (await c.ok('region_create', { bytes })) as { region: number; path: string };
    writeRegion(src.path, fillPattern(bytes, 9));
    const ids: number[] = [];
    for (let k = 0; k < 24; k++) {
      const tokens = tokensFor(100 + k, chunks * l.chunkTokens);
      ids.push(c.send('put', { model: MODEL, tokens, region: src.region, offsets: offsetsFor(l, chunks) }));
    }
    const exited = new Promise<number | null>((r) => second.proc.once('exit', (code) => r(code)));
    second.proc.kill('SIGTERM');
    const replies = await Promise.all(ids.map((id) => c.next((r) => r.id === id && r.event === undefined)));
    for (const r of replies) {
      if (r.ok) expect(r.result?.tokensIndexed).toBe(chunks * l.chunkTokens);
      else expect(r.error?.name).toBe('CLOSED');
    }
    expect(await exited).toBe(0);
    await expect(AgentConn.open(second.socketPath)).rejects.toThrow();
    c.close();
  }, 60_000);
});
