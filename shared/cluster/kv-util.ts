/** Small helpers over nats.js KV shared by the cluster actors. */
import { JetStreamApiCodes, JetStreamApiError } from '@nats-io/jetstream';
import type { KV, KvEntry } from '@nats-io/kv';

/** A compare-and-set write lost: the key's revision is not the one the writer expected. */
export function isWrongLastSequence(err: unknown): boolean {
  if (err instanceof JetStreamApiError) {
    return (
      err.code === JetStreamApiCodes.StreamWrongLastSequence ||
      err.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown
    );
  }
  return /wrong last sequence/i.test(String((err as Error | undefined)?.message ?? ''));
}

/** The live value of a key, or undefined when absent, deleted or purged. */
export async function getLive(kv: KV, key: string): Promise<KvEntry | undefined> {
  const e = await kv.get(key);
  if (e === null || e.operation !== 'PUT') return undefined;
  return e;
}
