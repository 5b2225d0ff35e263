/** kvfabric through the worker SDK: index lookup in Redis, locate over NATS, bytes over UCX. */
import type { KvBuffers, KvfClient, ModelLayout } from '../../../shared/sdk/mod.js';
import type { Prompt, Strategy } from './strategy.js';

export class FabricStrategy implements Strategy {
  readonly name = 'kvfabric';
  /** Namespaces are suffixed per clear() so that a cleared strategy starts cold without deleting anything. */
  private generation = 0;

  constructor(
    readonly layout: ModelLayout,
    private readonly kvf: KvfClient,
  ) {}

  private ns(p: Prompt): string {
    return `${p.namespace}.g${this.generation}`;
  }

  async get(p: Prompt, target: KvBuffers): Promise<number> {
    const tokens = await this.kvf.get(p.tokens, target, {
      namespace: this.ns(p),
      model: this.layout.profile.id,
    });
    return Math.floor(tokens / this.layout.chunkTokens);
  }

  /** Puts that indexed fewer chunks than the prompt has (a block was refused, timed out or failed). */
  putShortfalls = 0;
  lastPutError: string | undefined;

  async put(p: Prompt, kv: KvBuffers): Promise<void> {
    try {
      const r = await this.kvf.put(p.tokens, kv, { namespace: this.ns(p), model: this.layout.profile.id });
      if (r.tokensIndexed < p.hashes.length * this.layout.chunkTokens) {
        this.putShortfalls++;
        this.lastPutError = `indexed ${r.tokensIndexed} of ${p.hashes.length * this.layout.chunkTokens} tokens (stored ${r.chunksStored}, present ${r.chunksPresent}, index degraded ${r.indexDegraded})`;
      }
    } catch (err) {
      // A put that fails outright leaves the prompt uncached: the next get misses, as in an engine.
      this.putShortfalls++;
      this.lastPutError = err instanceof Error ? err.message : String(err);
    }
  }

  allocBuffers(chunks: number): Promise<KvBuffers> {
    return this.kvf.allocKv(chunks * this.layout.chunkTokens, { model: this.layout.profile.id });
  }

  clear(): Promise<void> {
    this.generation++;
    return Promise.resolve();
  }

  close(): Promise<void> {
    return Promise.resolve(); // the client belongs to the caller
  }
}
