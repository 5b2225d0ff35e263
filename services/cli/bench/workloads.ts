/**
 * The request sequences every strategy replays, identical for all of them:
 *
 * - agent: the seed's agent loop, ONE long shared context resent with many different follow-up
 *   questions (the cache should serve the context every time after the first);
 * - chat: multi-turn conversations, each turn's prompt is the previous prompt plus the reply and
 *   a new user message (the cache should serve the whole previous turn), conversations
 *   interleaved round-robin as a server sees them;
 * - trace: the public trace's requests in order, time compressed (back to back).
 *
 * Prompts are produced lazily (a long trace does not sit in memory) and deterministically.
 */
import { tokensFrom } from '../demo/synth.js';
import { TraceTokenizer, type TraceRequest } from './trace.js';

export interface Workload {
  name: 'agent' | 'chat' | 'trace';
  /** Model the prompts are for (the fabric's model id; hashes and KV sizes follow it). */
  model: string;
  /** Namespace the prompts live in (isolates workloads from each other). */
  namespace: string;
  requests: number;
  /** Longest prompt in tokens (sizes the worker's buffers). */
  maxTokens: number;
  prompt(i: number): Uint32Array;
}

export interface AgentOptions {
  model: string;
  contextTokens: number;
  requests: number;
  questionTokensMin: number;
  questionTokensMax: number;
  seed: number;
}

export function agentWorkload(o: AgentOptions): Workload {
  const context = tokensFrom(o.seed, o.contextTokens);
  const span = o.questionTokensMax - o.questionTokensMin + 1;
  const qLen = (k: number): number => o.questionTokensMin + ((k * 7919) % span);
  return {
    name: 'agent',
    model: o.model,
    namespace: `bench-agent-${o.seed}`,
    requests: o.requests,
    maxTokens: o.contextTokens + o.questionTokensMax,
    prompt(k) {
      const t = new Uint32Array(o.contextTokens + qLen(k));
      t.set(context);
      t.set(tokensFrom(o.seed * 1000 + k + 1, t.length - o.contextTokens), o.contextTokens);
      return t;
    },
  };
}

export interface ChatOptions {
  model: string;
  conversations: number;
  turns: number;
  /** Tokens each turn adds (previous reply + new user message). */
  turnTokens: number;
  seed: number;
}

export function chatWorkload(o: ChatOptions): Workload {
  // Conversation c's full token stream; turn t's prompt is its first (t + 1) * turnTokens tokens.
  const streams = Array.from({ length: o.conversations }, (_, c) =>
    tokensFrom(o.seed * 7 + c + 1, o.turns * o.turnTokens),
  );
  return {
    name: 'chat',
    model: o.model,
    namespace: `bench-chat-${o.seed}`,
    requests: o.conversations * o.turns,
    maxTokens: o.turns * o.turnTokens,
    prompt(i) {
      const c = i % o.conversations;
      const t = Math.floor(i / o.conversations);
      return (streams[c] as Uint32Array).slice(0, (t + 1) * o.turnTokens);
    },
  };
}

export function traceWorkload(model: string, reqs: readonly TraceRequest[]): Workload {
  const tok = new TraceTokenizer();
  return {
    name: 'trace',
    model,
    namespace: 'bench-trace',
    requests: reqs.length,
    maxTokens: Math.max(0, ...reqs.map((r) => r.inputLength)),
    prompt: (i) => tok.prompt(reqs[i] as TraceRequest),
  };
}
