/**
 * The mixed workload: a few concurrent loops, each picking a random prompt of the corpus and
 * putting it (fresh buffers) or getting it (verifying every returned block against the writer's
 * bytes), recording every operation in the History. Runs until stopped; bounded by opsMax.
 */
import type { KvfClient } from '../../../shared/sdk/mod.js';
import type { Corpus, Prompt } from './corpus.js';
import type { History } from './history.js';
import type { Rng } from './rng.js';
import type { OpKind, OpRecord } from './types.js';

export interface WorkloadOptions {
  /** Concurrent operation loops. @default 3 */
  concurrency?: number;
  /** Share of operations that are puts. @default 0.4 */
  putRatio?: number;
  /** Pause between two operations of one loop (keeps a 2-core machine usable). @default 5 */
  thinkMs?: number;
  /** Stop after this many operations in all. @default 100000 */
  opsMax?: number;
}

export const WORKLOAD_DEFAULTS = { concurrency: 3, putRatio: 0.4, thinkMs: 5, opsMax: 100_000 } as const;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function errText(err: unknown): string {
  const e = err as { code?: unknown; message?: unknown };
  return `${String(e.code ?? 'ERROR')}: ${String(e.message ?? err)}`.slice(0, 300);
}

/** Put one prompt; `corrupt` is called after the writer's checksums exist (in-flight fault). */
export async function putPrompt(
  client: KvfClient,
  corpus: Corpus,
  history: History,
  prompt: Prompt,
  corruptInFlight = false,
): Promise<OpRecord> {
  const chunks = prompt.hashes.length;
  const rec = history.begin('put', prompt.id, chunks);
  const kv = corpus.kvFor(prompt);
  try {
    const r = await client.put(prompt.tokens, kv, { model: corpus.model, namespace: corpus.namespace });
    history.end(rec, {
      ok: true,
      ackChunks: r.chunksStored + r.chunksPresent,
      indexDegraded: r.indexDegraded,
      checksums: corpus.checksumsOf(prompt, chunks),
      ...(corruptInFlight ? { corruptedInFlight: true } : {}),
    });
  } catch (err) {
    history.end(rec, { ok: false, error: errText(err) });
  }
  return rec;
}

/** Get one prompt and check every returned block. */
export async function getPrompt(
  client: KvfClient,
  corpus: Corpus,
  history: History,
  prompt: Prompt,
  kind: OpKind = 'get',
): Promise<OpRecord> {
  const chunks = prompt.hashes.length;
  const rec = history.begin(kind, prompt.id, chunks);
  const target = corpus.targetFor(prompt);
  try {
    const r = await client.getDetailed(prompt.tokens, target, {
      model: corpus.model,
      namespace: corpus.namespace,
    });
    const hit = Math.floor(r.tokens / corpus.layout.chunkTokens);
    history.end(rec, {
      ok: true,
      hitChunks: hit,
      corruptBlocks: corpus.countCorrupt(prompt, target, hit),
      degraded: r.degraded,
      indexedChunks: r.indexedChunks,
      failedBlocks: r.failedBlocks,
      failovers: r.failovers,
    });
  } catch (err) {
    history.end(rec, { ok: false, error: errText(err) });
  }
  return rec;
}

export class Workload {
  private stopping = false;
  private loops: Promise<void>[] = [];
  private started = 0;
  /** Set while the in-flight corruption fault is active: puts corrupt their bytes after the crc. */
  corruptInFlight: ((prompt: Prompt) => boolean) | undefined;

  constructor(
    private readonly client: KvfClient,
    private readonly corpus: Corpus,
    private readonly history: History,
    private readonly rng: Rng,
    private readonly opts: WorkloadOptions = {},
  ) {}

  start(): void {
    const o = { ...WORKLOAD_DEFAULTS, ...this.opts };
    for (let k = 0; k < o.concurrency; k++) this.loops.push(this.loop(this.rng.fork(), o));
  }

  private async loop(rng: Rng, o: Required<WorkloadOptions>): Promise<void> {
    while (!this.stopping && this.started < o.opsMax) {
      this.started++;
      const prompt = rng.pick(this.corpus.prompts);
      if (rng.next() < o.putRatio) {
        const corrupt = this.corruptInFlight?.(prompt) ?? false;
        await putPrompt(this.client, this.corpus, this.history, prompt, corrupt);
      } else {
        await getPrompt(this.client, this.corpus, this.history, prompt);
      }
      await sleep(o.thinkMs);
    }
  }

  /** Stop the loops and wait for the operations in flight. */
  async stop(): Promise<void> {
    this.stopping = true;
    await Promise.all(this.loops);
    this.loops = [];
  }
}
