/**
 * Entry point of the replica actor (`kvfabric replica --config <file>`): a node with role
 * 'replica'. It is never a cell's primary (placement puts it behind shard nodes); it holds copies
 * of the cells it is placed in, pulled over UCX from their primaries (pushes after every commit,
 * backfill after every placement change), and serves reads of the cells it holds in full. Meant
 * for host-memory machines that keep copies cheaply; the same code runs inside every shard node,
 * which is a replica of other nodes' cells. It is the shard-node process with another role: same
 * config keys (shard.*), same endpoints, same shutdown (docs/replication.md).
 */
import { runNode } from '../shard-node/main.js';

const WHAT = "Runs a replica actor: pulls copies of its primaries' blocks so a failed node loses nothing.";

export async function main(argv: string[]): Promise<number> {
  return runNode(argv, 'replica', 'replica', WHAT);
}
