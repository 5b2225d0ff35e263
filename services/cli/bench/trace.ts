/**
 * The public trace (Mooncake's format, one JSON object per line): `timestamp` (ms), `input_length`
 * and `output_length` (tokens) and `hash_ids`, one id per 512-token block of the prompt, the last
 * one covering a partial block when input_length is not a multiple of 512. Ids name prefixes: the
 * same id at the same position means the same tokens up to and including that block.
 *
 * The trace carries no tokens, so each id is mapped to 512 token ids by a sha256 counter stream of
 * the id: identical ids give identical tokens, different ids (almost surely) different ones, and
 * the fabric's own chunk hashes then reproduce the trace's prefix sharing exactly.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { KvfError } from '../../../shared/errors.js';

/** Tokens per trace block (Mooncake's hash_ids granularity). */
export const TRACE_BLOCK_TOKENS = 512;
/** Token ids are drawn from [0, vocab): Llama-3's vocabulary size. */
export const TRACE_VOCAB = 128_256;

export interface TraceRequest {
  timestampMs: number;
  inputLength: number;
  outputLength: number;
  hashIds: number[];
}

/** One trace line; throws KvfError('BAD_REQUEST') naming the line on anything malformed. */
export function parseTraceLine(line: string, lineNo = 0): TraceRequest {
  let x: unknown;
  try {
    x = JSON.parse(line);
  } catch {
    throw new KvfError('BAD_REQUEST', `trace line ${lineNo}: not JSON`);
  }
  const o = x as Record<string, unknown>;
  const nat = (k: string): number => {
    const v = o[k];
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
      throw new KvfError('BAD_REQUEST', `trace line ${lineNo}: ${k} must be a non-negative integer`);
    }
    return v;
  };
  const ids = o.hash_ids;
  if (!Array.isArray(ids) || !ids.every((v) => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0)) {
    throw new KvfError('BAD_REQUEST', `trace line ${lineNo}: hash_ids must be non-negative integers`);
  }
  const r: TraceRequest = {
    timestampMs: nat('timestamp'),
    inputLength: nat('input_length'),
    outputLength: nat('output_length'),
    hashIds: ids as number[],
  };
  if (r.hashIds.length < fullBlocksOf(r)) {
    throw new KvfError('BAD_REQUEST', `trace line ${lineNo}: fewer hash_ids than input blocks`);
  }
  return r;
}

/** Parse trace text; blank lines are skipped. `limit` keeps the first requests only. */
export function parseTrace(text: string, limit = Number.POSITIVE_INFINITY): TraceRequest[] {
  const out: TraceRequest[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length && out.length < limit; i++) {
    const line = (lines[i] as string).trim();
    if (line) out.push(parseTraceLine(line, i + 1));
  }
  return out;
}

export function loadTrace(file: string, limit?: number): TraceRequest[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new KvfError('BAD_REQUEST', `cannot read trace ${file}: ${(err as Error).message}`);
  }
  return parseTrace(text, limit);
}

/** Whole 512-token blocks of a request: only these can be cached (a partial chunk never is). */
export function fullBlocksOf(r: TraceRequest): number {
  return Math.floor(r.inputLength / TRACE_BLOCK_TOKENS);
}

/** The cacheable block ids of each request, in order: the sequence the simulators replay. */
export function blockSequences(reqs: readonly TraceRequest[]): number[][] {
  return reqs.map((r) => r.hashIds.slice(0, fullBlocksOf(r)));
}

/**
 * The 512 token ids of a trace block: sha256(`kvfabric-trace:<id>:<k>`) for k = 0, 1, ... gives
 * 8 u32 words per digest, each reduced mod the vocabulary. Pure and deterministic.
 */
export function tokensForBlock(id: number, out = new Uint32Array(TRACE_BLOCK_TOKENS)): Uint32Array {
  for (let k = 0; k * 8 < TRACE_BLOCK_TOKENS; k++) {
    const d = createHash('sha256').update(`kvfabric-trace:${id}:${k}`).digest();
    for (let j = 0; j < 8 && k * 8 + j < out.length; j++)
      out[k * 8 + j] = d.readUInt32LE(j * 4) % TRACE_VOCAB;
  }
  return out;
}

/** Memoised block tokens: popular ids recur thousands of times. */
export class TraceTokenizer {
  private readonly cache = new Map<number, Uint32Array>();

  constructor(private readonly cacheBlocksMax = 65_536) {}

  block(id: number): Uint32Array {
    let t = this.cache.get(id);
    if (!t) {
      t = tokensForBlock(id);
      if (this.cache.size < this.cacheBlocksMax) this.cache.set(id, t);
    }
    return t;
  }

  /** The request's prompt: its blocks' tokens, cut to input_length (the last block may be partial). */
  prompt(r: TraceRequest): Uint32Array {
    const out = new Uint32Array(r.inputLength);
    for (let b = 0; b * TRACE_BLOCK_TOKENS < r.inputLength; b++) {
      const id = r.hashIds[b];
      if (id === undefined) throw new KvfError('BAD_REQUEST', 'trace request has too few hash_ids');
      const at = b * TRACE_BLOCK_TOKENS;
      out.set(this.block(id).subarray(0, Math.min(TRACE_BLOCK_TOKENS, r.inputLength - at)), at);
    }
    return out;
  }
}
