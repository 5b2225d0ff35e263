import { describe, expect, it } from 'vitest';
import { isKvfError } from '../../shared/errors.js';
import { chunkHashes } from '../../shared/hashing.js';
import {
  blockSequences,
  fullBlocksOf,
  parseTrace,
  parseTraceLine,
  TRACE_BLOCK_TOKENS,
  TRACE_VOCAB,
  TraceTokenizer,
  tokensForBlock,
} from '../../services/cli/bench/trace.js';

const LINE = '{"timestamp": 5, "input_length": 1100, "output_length": 7, "hash_ids": [10, 11, 12]}';

describe('bench trace parsing', () => {
  it('parses a Mooncake line', () => {
    const r = parseTraceLine(LINE, 1);
    expect(r).toEqual({ timestampMs: 5, inputLength: 1100, outputLength: 7, hashIds: [10, 11, 12] });
    // 1100 tokens = 2 whole 512-token blocks + a partial one that is never cacheable.
    expect(fullBlocksOf(r)).toBe(2);
    expect(blockSequences([r])).toEqual([[10, 11]]);
  });

  it('rejects malformed lines with the line number', () => {
    const bad = [
      'not json',
      '{"timestamp": 0, "input_length": 10, "output_length": 1}',
      '{"timestamp": 0, "input_length": -1, "output_length": 1, "hash_ids": []}',
      '{"timestamp": 0, "input_length": 1024, "output_length": 1, "hash_ids": [1]}',
      '{"timestamp": 0, "input_length": 10, "output_length": 1, "hash_ids": [1.5]}',
    ];
    for (const line of bad) {
      let err: unknown;
      try {
        parseTraceLine(line, 7);
      } catch (e) {
        err = e;
      }
      expect(isKvfError(err, 'BAD_REQUEST'), line).toBe(true);
      expect((err as Error).message).toContain('line 7');
    }
  });

  it('parseTrace skips blank lines and honours the limit', () => {
    const text = `${LINE}\n\n${LINE.replace('"timestamp": 5', '"timestamp": 9')}\n${LINE}\n`;
    expect(parseTrace(text).map((r) => r.timestampMs)).toEqual([5, 9, 5]);
    expect(parseTrace(text, 2)).toHaveLength(2);
  });
});

describe('bench trace token mapping', () => {
  it('maps an id to 512 in-vocabulary tokens, deterministically', () => {
    const a = tokensForBlock(42);
    expect(a).toHaveLength(TRACE_BLOCK_TOKENS);
    expect([...a].every((t) => t >= 0 && t < TRACE_VOCAB)).toBe(true);
    expect([...tokensForBlock(42)]).toEqual([...a]);
    const b = tokensForBlock(43);
    expect([...b]).not.toEqual([...a]);
    // Not a constant or a short cycle: most tokens of one block differ from each other.
    expect(new Set(a).size).toBeGreaterThan(400);
  });

  it('builds prompts cut to input_length; shared ids give shared tokens and shared chunk hashes', () => {
    const tok = new TraceTokenizer();
    const r1 = parseTraceLine('{"timestamp":0,"input_length":1300,"output_length":1,"hash_ids":[1,2,3]}');
    const r2 = parseTraceLine('{"timestamp":1,"input_length":1024,"output_length":1,"hash_ids":[1,9]}');
    const p1 = tok.prompt(r1);
    const p2 = tok.prompt(r2);
    expect(p1).toHaveLength(1300);
    expect([...p1.subarray(0, 512)]).toEqual([...tokensForBlock(1)]);
    expect([...p1.subarray(1024)]).toEqual([...tokensForBlock(3).subarray(0, 276)]);
    const opts = { modelId: 'bench-trace', namespace: 'n', chunkTokens: TRACE_BLOCK_TOKENS };
    const h1 = chunkHashes(p1, opts);
    const h2 = chunkHashes(p2, opts);
    expect(h1).toHaveLength(2);
    expect(h2).toHaveLength(2);
    expect(h1[0]).toBe(h2[0]);
    expect(h1[1]).not.toBe(h2[1]);
  });
});
