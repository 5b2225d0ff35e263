import { describe, expect, it } from 'vitest';
import { renderChart, escapeXml } from '../../services/cli/bench/chart.js';
import { LocalKVCache } from '../../services/cli/bench/local-lru.js';
import { parseBenchOptions, PARTS } from '../../services/cli/bench/options.js';
import { decodeBlockInto, encodeBlock } from '../../services/cli/bench/redis-store.js';
import type { BenchReport } from '../../services/cli/bench/report.js';
import { isKvfError } from '../../shared/errors.js';

/** Every element closed in order, attributes quoted, no raw '&' or '<' in text. */
function expectWellFormedXml(xml: string): void {
  const body = xml.replace(/^<\?xml[^?]*\?>\s*/, '');
  const stack: string[] = [];
  const tag = /<(\/?)([A-Za-z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>/g;
  let last = 0;
  for (let m = tag.exec(body); m; m = tag.exec(body)) {
    const between = body.slice(last, m.index);
    expect(between, `text before ${m[0]}`).not.toMatch(/[<>]|&(?!(lt|gt|amp|apos|quot);)/);
    last = tag.lastIndex;
    const [, close, name, , selfClose] = m;
    if (close) expect(stack.pop(), `closing ${name}`).toBe(name);
    else if (!selfClose) stack.push(name!);
  }
  expect(body.slice(last).trim()).toBe('');
  expect(stack).toEqual([]);
  expect(body.startsWith('<svg')).toBe(true);
}

function report(over: Partial<BenchReport> = {}): BenchReport {
  return {
    kind: 'kvfabric-bench',
    version: 1,
    command: 'kvfabric bench --out "a<b>&c"',
    startedAt: '2026-01-01T00:00:00.000Z',
    wallMs: 1,
    machine: { cpus: 2, cpuModel: 'x', memoryGiB: 24, node: 'v20', platform: 'linux' },
    strategies: [
      {
        name: 'no-cache',
        source: 'model',
        workload: 'agent',
        gbps: 0,
        tokensPerSec: 2e4,
        p50Ms: 1,
        p95Ms: 1,
        p99Ms: 1,
        hitRate: 0,
        gbpsVsRedis: null,
        tokensPerSecVsRedis: null,
        p99VsRedis: null,
      },
      {
        name: 'redis',
        source: 'measured',
        workload: 'agent',
        gbps: 0.1,
        tokensPerSec: 500,
        p50Ms: 1,
        p95Ms: 2,
        p99Ms: 3,
        hitRate: 0.9,
        gbpsVsRedis: 1,
        tokensPerSecVsRedis: 1,
        p99VsRedis: 1,
      },
      {
        name: 'kvfabric',
        source: 'measured',
        workload: 'agent',
        gbps: 2,
        tokensPerSec: 1e4,
        p50Ms: 1,
        p95Ms: 1,
        p99Ms: 1,
        hitRate: 0.9,
        gbpsVsRedis: 20,
        tokensPerSecVsRedis: 20,
        p99VsRedis: 0.3,
      },
    ],
    workloads: [],
    trace: {
      idealHitRate: 0.5,
      hitRate: 0.5,
      beladyHitRateAtCapacity: 0.4,
      lruHitRateAtCapacity: 0.3,
      capacityFraction: 0.1,
      units: 'blocks',
      sources: {},
      requestsReplayed: 10,
      replayWorkingSetBlocks: 100,
      fullTrace: { requests: 10, workingSetBlocks: 100, infiniteHitRate: 0.5 },
      sweep: [0.01, 0.1, 1].map((fraction) => ({
        fraction,
        capacityBlocks: 1,
        lru: fraction / 2,
        belady: fraction,
        infinite: 1,
        lruOverBelady: 0.5,
      })),
      measured: [
        {
          source: 'measured',
          fraction: 1,
          capacityBlocks: 100,
          arenaBytesPerNode: 1,
          hitRate: 0.5,
          simLru: 0.5,
          simBelady: 0.5,
          infinite: 0.5,
        },
      ],
    },
    computeModel: { kind: 'model', gpuTflops: 400, assumption: '', projections: [] },
    limits: { memcpyGbps: null },
    targets: [],
    notes: [],
    ...over,
  };
}

describe('bench outputs', () => {
  it('the SVG chart is well-formed XML, escapes text, and draws every strategy and series', () => {
    const svg = renderChart(report());
    expectWellFormedXml(svg);
    expect(svg).toContain('a&lt;b&gt;&amp;c');
    for (const name of [
      'no-cache (model)',
      'redis',
      'kvfabric',
      'LRU (sim)',
      'Belady (sim)',
      'infinite (sim)',
    ]) {
      expect(svg).toContain(`>${name}</text>`);
    }
    expect(svg.match(/<path /g)).toHaveLength(3);
    expect(svg.match(/<circle /g)).toHaveLength(2); // one measured point + its legend
  });

  it('the SVG chart stays well-formed with no results', () => {
    const empty = report({ strategies: [] });
    empty.trace.sweep = [];
    empty.trace.measured = [];
    expectWellFormedXml(renderChart(empty));
    expect(escapeXml(`'"`)).toBe('&apos;&quot;');
  });

  it('LocalKVCache: byte capacity, LRU order, copies', () => {
    const c = new LocalKVCache(30);
    const block = new Uint8Array(10).fill(1);
    expect(c.set('a', [block])).toBe(true);
    block.fill(9); // the cache holds a copy
    expect(c.get('a')?.[0]?.[0]).toBe(1);
    c.set('b', [new Uint8Array(10)]);
    c.set('c', [new Uint8Array(10)]);
    c.get('a'); // a is now the most recent: b is the next victim
    c.set('d', [new Uint8Array(10)]);
    expect(['a', 'b', 'c', 'd'].map((k) => c.has(k))).toEqual([true, false, true, true]);
    expect(c.usedBytes).toBe(30);
    expect(c.set('huge', [new Uint8Array(31)])).toBe(false);
    expect(c.size).toBe(3);
  });

  it('Redis store values: fp32 blocks are stored as fp16 (half the bytes) and gzip round-trips', () => {
    const f = new Float32Array([0, 1, -2.5, 65504, 0.000061035156]); // all exact in fp16
    const block = new Uint8Array(f.buffer);
    const plain = encodeBlock(block, 'fp32', false);
    expect(plain.byteLength).toBe(block.byteLength / 2);
    const zipped = encodeBlock(block, 'fp32', true);
    expect(zipped.subarray(0, 2)).toEqual(Buffer.from([0x1f, 0x8b]));
    for (const [v, gz] of [
      [plain, false],
      [zipped, true],
    ] as const) {
      const out = new Uint8Array(block.byteLength);
      decodeBlockInto(v, 'fp32', gz, out);
      expect([...new Float32Array(out.buffer)]).toEqual([...f]);
    }
    const fp16 = new Uint8Array([1, 2, 3, 4]);
    expect([...encodeBlock(fp16, 'fp16', false)]).toEqual([1, 2, 3, 4]);
  });

  it('options: parts, presets, --trace, unknown words', () => {
    const now = new Date('2026-01-02T03:04:05.678Z');
    const all = parseBenchOptions([], now);
    expect(all.parts).toEqual([...PARTS]);
    expect(all.outDir).toBe('bench-results/2026-01-02T03-04-05-678Z');
    expect(all.agentContextTokens).toBe(8192); // the full run's 1 GiB Llama-3-8B prefix
    const q = parseBenchOptions(
      ['--quick', 'sweep', 'limits', '--trace', 't.jsonl', '--gpu-tflops', '100'],
      now,
    );
    expect(q.quick).toBe(true);
    expect(q.parts).toEqual(['sweep', 'limits']);
    expect(q.tracePath).toBe('t.jsonl');
    expect(q.gpuTflops).toBe(100);
    expect(q.agentContextTokens).toBeLessThan(all.agentContextTokens);
    for (const bad of [['nope'], ['--nope'], ['--gpu-tflops', '0']]) {
      let err: unknown;
      try {
        parseBenchOptions(bad, now);
      } catch (e) {
        err = e;
      }
      expect(isKvfError(err, 'BAD_REQUEST'), bad.join(' ')).toBe(true);
    }
    expect(() => parseBenchOptions(['nope'])).toThrow(/unknown subcommand "nope"/);
  });
});
