/**
 * The local agent's wire protocol (docs/agent-protocol.md): frames on a unix domain socket
 * between an engine process and `kvfabric agent`. A frame is a 4-byte big-endian length followed
 * by that many bytes of UTF-8 JSON. No KV bytes ever cross the socket: they live in shared-memory
 * regions the agent creates and the engine maps.
 *
 * Request:  {v, id, op, ...args}
 * Reply:    {v, id, ok: true, result} | {v, id, ok: false, error: {code, name, message, details?}}
 * Event:    {v, id, event: 'group', group, chunks, tokens}   (get only, before its reply)
 */
import { s, type Infer } from './schema.js';

/** Bumped on any incompatible change of frames or ops; a request with another `v` is refused. */
export const AGENT_PROTOCOL_VERSION = 1;

export const AGENT_LIMITS = {
  /** Largest frame body accepted (a 1M-token prompt as JSON fits). */
  frameBytesMax: 16 * 2 ** 20,
  /** Tokens in one request. */
  tokensMax: 2 ** 21,
  /** Prompts in one lookup_many. */
  promptsMax: 4096,
  /** Request ids are non-negative safe integers chosen by the client. */
  requestIdMax: Number.MAX_SAFE_INTEGER,
} as const;

const tokens = s.array(s.int({ min: 0, max: 0xffff_ffff }), { maxItems: AGENT_LIMITS.tokensMax });
const modelId = s.string({ minLength: 1, maxLength: 256 });
const namespace = s.optional(s.string({ maxLength: 256 }));
const regionId = s.int({ min: 1 });
const offsets = s.array(s.int({ min: 0 }), { minItems: 1, maxItems: 1024 });

/** Every frame's envelope; the op-specific fields are validated by the op's own schema. */
export const agentEnvelopeSchema = s.object({
  v: s.int({ min: 0 }),
  id: s.int({ min: 0 }),
  op: s.string({ minLength: 1, maxLength: 64 }),
});

export const agentOpSchemas = {
  hello: s.object({ client: s.optional(s.string({ maxLength: 256 })) }),
  register_model: s.object({
    profile: s.object({
      id: modelId,
      layers: s.int({ min: 1 }),
      kvHeads: s.int({ min: 1 }),
      headDim: s.int({ min: 1 }),
      dtype: s.string({ maxLength: 16 }),
      chunkTokens: s.int({ min: 1 }),
    }),
  }),
  layout: s.object({ model: modelId }),
  region_create: s.object({ bytes: s.int({ min: 1 }) }),
  region_free: s.object({ region: regionId }),
  cuda_ipc_open: s.object({
    handle: s.string({ minLength: 1, maxLength: 256 }),
    deviceId: s.optional(s.int({ min: 0, max: 1024 })),
    bytes: s.int({ min: 1 }),
  }),
  lookup: s.object({ model: modelId, namespace, tokens }),
  lookup_many: s.object({
    model: modelId,
    namespace,
    prompts: s.array(tokens, { maxItems: AGENT_LIMITS.promptsMax }),
  }),
  get: s.object({
    model: modelId,
    namespace,
    tokens,
    region: regionId,
    offsets,
    /** Chunks the region slots hold; default floor(tokens / chunkTokens). */
    chunks: s.optional(s.int({ min: 0 })),
    /** Send a `group` event as each layer group lands. @default false */
    events: s.optional(s.bool()),
  }),
  put: s.object({
    model: modelId,
    namespace,
    tokens,
    region: regionId,
    offsets,
    chunks: s.optional(s.int({ min: 0 })),
  }),
  stats: s.object({}),
} as const;

export type AgentOp = keyof typeof agentOpSchemas;
export type AgentArgs<O extends AgentOp> = Infer<(typeof agentOpSchemas)[O]>;

export function isAgentOp(op: string): op is AgentOp {
  return Object.hasOwn(agentOpSchemas, op);
}
