/**
 * The operation history of one scenario and the checks run on it afterwards.
 *
 * Definitions (docs/reliability.md):
 * - An acknowledged chunk is (prompt, chunk i) with i < ackChunks of a put that returned. Its
 *   identity is its chunk hash (prompts of a family share their prefix chunks).
 * - acknowledgedLost: acknowledged chunk hashes that the final re-read of every prompt does not
 *   return (a hit shorter than the chunk's index + 1), counted once per hash. Valid only when no
 *   node evicted anything during the run (the suite sizes arenas so that nothing is evicted and
 *   checks the nodes' eviction counters): a shorter hit is then never explained by eviction.
 * - corruptServed: blocks returned by any get (workload, probes, final re-read) whose bytes differ
 *   from what the writer wrote, i.e. from the bytes whose checksum the writer computed.
 * - errorRate: workload operations that threw, over workload operations (probes and the final
 *   re-read are measurements and do not count).
 */
import type { OpKind, OpRecord } from './types.js';

export class History {
  readonly ops: OpRecord[] = [];
  private seq = 0;

  begin(kind: OpKind, promptId: number, chunks: number): OpRecord {
    const r: OpRecord = { seq: this.seq++, kind, promptId, startMs: Date.now(), endMs: 0, ok: false, chunks };
    this.ops.push(r);
    return r;
  }

  end(r: OpRecord, fields: Partial<OpRecord>): void {
    Object.assign(r, fields);
    r.endMs = Date.now();
  }

  /** JSON lines, one operation each (for --history FILE). */
  toJsonLines(scenario: string): string {
    return this.ops.map((o) => JSON.stringify({ scenario, ...o })).join('\n') + '\n';
  }
}

export interface HistoryVerdict {
  /** Workload operations (puts and gets). */
  ops: number;
  failedOps: number;
  errorRate: number;
  acknowledgedChunks: number;
  acknowledgedLost: number;
  corruptServed: number;
  /** Hashes of lost chunks (first few), for the report. */
  lostSample: string[];
}

/**
 * `hashesOf(promptId)` gives the prompt's chunk hashes. The final re-read must be in the history
 * (kind 'final', one per prompt that any put acknowledged); missing ones count as lost.
 */
export function checkHistory(
  history: History,
  hashesOf: (promptId: number) => readonly string[],
): HistoryVerdict {
  const work = history.ops.filter((o) => o.kind === 'put' || o.kind === 'get');
  const failedOps = work.filter((o) => !o.ok).length;
  const acknowledged = new Set<string>();
  for (const o of history.ops) {
    if (o.kind !== 'put' || !o.ok || !o.ackChunks) continue;
    const hs = hashesOf(o.promptId);
    for (let i = 0; i < o.ackChunks; i++) acknowledged.add(hs[i] as string);
  }
  const readable = new Set<string>();
  for (const o of history.ops) {
    if (o.kind !== 'final' || !o.ok || !o.hitChunks) continue;
    const hs = hashesOf(o.promptId);
    for (let i = 0; i < o.hitChunks; i++) readable.add(hs[i] as string);
  }
  const lost = [...acknowledged].filter((h) => !readable.has(h));
  const corruptServed = history.ops.reduce((a, o) => a + (o.corruptBlocks ?? 0), 0);
  return {
    ops: work.length,
    failedOps,
    errorRate: work.length === 0 ? 0 : failedOps / work.length,
    acknowledgedChunks: acknowledged.size,
    acknowledgedLost: lost.length,
    corruptServed,
    lostSample: lost.slice(0, 5).map((h) => h.slice(0, 16)),
  };
}

/** Prompts with at least one acknowledged chunk, and the most chunks any put acknowledged. */
export function acknowledgedPrompts(history: History): Map<number, number> {
  const m = new Map<number, number>();
  for (const o of history.ops) {
    if (o.kind === 'put' && o.ok && (o.ackChunks ?? 0) > 0) {
      m.set(o.promptId, Math.max(m.get(o.promptId) ?? 0, o.ackChunks ?? 0));
    }
  }
  return m;
}
