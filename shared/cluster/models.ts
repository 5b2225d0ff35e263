/**
 * Reading registered model profiles from kvf_models. Registration itself goes through the
 * coordinator (`CoordinatorClient.registerModel`) so that create-or-conflict is decided in one
 * place; any actor may read.
 */
import type { KV } from '@nats-io/kv';
import { KvfError } from '../errors.js';
import { validateProfile, type ModelProfile } from '../profiles.js';
import { modelIdFromKey, modelKey } from '../protocol/cluster.js';
import { getLive } from './kv-util.js';

const dec = new TextDecoder('utf-8', { fatal: true });

export function decodeProfile(bytes: Uint8Array): ModelProfile {
  let obj: unknown;
  try {
    obj = JSON.parse(dec.decode(bytes));
  } catch (err) {
    throw new KvfError('MALFORMED', 'stored profile is not valid JSON', { cause: err });
  }
  return validateProfile(obj);
}

/** The registered profile, or undefined. */
export async function readModel(kv: KV, modelId: string): Promise<ModelProfile | undefined> {
  const e = await getLive(kv, modelKey(modelId));
  return e === undefined ? undefined : decodeProfile(e.value);
}

/** The registered profile; throws UNKNOWN_MODEL when absent. */
export async function requireModel(kv: KV, modelId: string): Promise<ModelProfile> {
  const p = await readModel(kv, modelId);
  if (p === undefined) {
    throw new KvfError('UNKNOWN_MODEL', `model ${modelId} is not registered`, {
      details: { model: modelId },
    });
  }
  return p;
}

/** Ids of all registered models. */
export async function listModels(kv: KV): Promise<string[]> {
  const ids: string[] = [];
  for await (const k of await kv.keys()) ids.push(modelIdFromKey(k));
  return ids.sort();
}

/** Canonical JSON of a profile (field order fixed) for equality checks. */
export function canonicalProfile(p: ModelProfile): string {
  return JSON.stringify({
    id: p.id,
    layers: p.layers,
    kvHeads: p.kvHeads,
    headDim: p.headDim,
    dtype: p.dtype,
    chunkTokens: p.chunkTokens,
  });
}
