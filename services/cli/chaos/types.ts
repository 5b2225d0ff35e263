/**
 * Shapes shared by the chaos suite: the operation history every scenario records, and the
 * per-scenario result that `kvfabric chaos --json` prints (issue 5, section 4).
 */

export type OpKind = 'put' | 'get' | 'probe' | 'final';

/** One operation of the workload, as the history checker sees it. */
export interface OpRecord {
  readonly seq: number;
  readonly kind: OpKind;
  readonly promptId: number;
  /** Wall clock (Date.now()) at start and end. */
  readonly startMs: number;
  endMs: number;
  /** The call returned (a get that returned a short hit is ok; one that threw is not). */
  ok: boolean;
  error?: string;
  /** Full chunks of the prompt. */
  readonly chunks: number;
  /** put: leading chunks the put acknowledged (stored or already present, every layer group). */
  ackChunks?: number;
  /** put: the index write failed (the data is stored but not findable yet). */
  indexDegraded?: boolean;
  /** put: crc32c of every block written, chunk-major ([chunk][group]). */
  checksums?: number[][];
  /** put: bytes of this put were corrupted after their checksum was computed (in-flight fault). */
  corruptedInFlight?: boolean;
  /** get/probe/final: leading chunks returned. */
  hitChunks?: number;
  /** get/probe/final: blocks returned whose bytes differ from what the writer wrote. */
  corruptBlocks?: number;
  /** get: the lookup ran degraded (Redis unreachable). */
  degraded?: boolean;
  /** get: chunks the index claimed; blocks that did not arrive intact; moves to another copy. */
  indexedChunks?: number;
  failedBlocks?: number;
  failovers?: number;
}

/** One line of `--json` output per scenario (extra fields after the required ones). */
export interface ScenarioResult {
  name: string;
  ops: number;
  acknowledgedLost: number;
  corruptServed: number;
  /** Fault -> the fault was noticed (coordinator declared the node dead, a new leader, ...); -1: not applicable or never. */
  detectMs: number;
  /** Fault -> reads of the affected blocks served in full again; -1: never within the wait. */
  failoverMs: number;
  /** Fault -> replication factor (or the index, or the reclaimed allocation) restored; -1: never within the wait. */
  restoreMs: number;
  errorRate: number;
  passed: boolean;
  /** Why it did not pass, and anything a reader of the figures should know. */
  notes: string[];
  /** Fault rounds (the long run repeats faults). */
  rounds: number;
  evictions: number;
}

export const SCENARIO_NAMES = [
  'kill-shard',
  'kill-replica',
  'kill-coordinator-leader',
  'pause-shard',
  'kill-nats-server',
  'kill-redis',
  'corrupt-stored-block',
  'corrupt-in-flight',
  'kill-writer',
] as const;
export type ScenarioName = (typeof SCENARIO_NAMES)[number];
