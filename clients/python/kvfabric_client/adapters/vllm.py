"""vLLM KV connector (v1 API: KVConnectorBase_V1's method set) backed by the kvfabric agent.

One class, two roles as vLLM instantiates it: role "scheduler" (get_num_new_matched_tokens,
update_state_after_alloc, build_connector_meta, request_finished) and role "worker"
(register_kv_caches, bind/clear_connector_metadata, start_load_kv, wait_for_layer_load,
save_kv_layer, wait_for_save, get_finished, get_block_ids_with_load_errors).

Paged KV layout expected per layer (vLLM's FlashAttention layout):
    [2, num_blocks, block_size, num_kv_heads, head_dim]
The kvfabric profile's chunkTokens must equal vLLM's block_size: one vLLM block <-> one chunk.

Keys (config key_mode): "vllm" (default) keys blocks by vLLM's own block hashes
(request.block_hashes, or computed here with sha256_cbor and python_hash_seed), "kvfabric"
by the token ids (docs/keys.md). Loads are synchronous within the forward pass, layer by layer;
a block that does not arrive intact is reported by get_block_ids_with_load_errors() and never
counted as loaded.
"""

import time
from dataclasses import dataclass, field

from ..errors import AgentUnavailable, KvfError
from ..keys import keys_to_tokens, vllm_block_hashes
from ..kvlayout import BlockViews
from .common import AgentLink, log


@dataclass
class LoadSpec:
    req_id: str
    tokens: list  # agent tokens of chunks [0, end)
    block_ids: list  # vLLM block ids of chunks [0, end)
    start: int  # first chunk to load (earlier ones are already computed locally)
    end: int


@dataclass
class SaveSpec:
    req_id: str
    tokens: list
    block_ids: list
    chunks: int


@dataclass
class KvfabricConnectorMetadata:
    loads: list = field(default_factory=list)
    saves: list = field(default_factory=list)


def _role_name(role):
    name = getattr(role, "name", role)
    return str(name).lower()


class KvfabricConnector:
    """config: {socket_path, model: {id, layers, kvHeads, headDim, dtype, chunkTokens},
    namespace?, key_mode? ("vllm"|"kvfabric"), python_hash_seed?, timeout_s? (10),
    reconnect_backoff_s? (1)}. With a vllm_config, config is its
    kv_transfer_config.kv_connector_extra_config."""

    def __init__(self, vllm_config=None, role="scheduler", config=None):
        if config is None:
            config = dict(vllm_config.kv_transfer_config.kv_connector_extra_config)
        self.role = _role_name(role)
        self.profile = dict(config["model"])
        self.model = self.profile["id"]
        self.block_size = self.profile["chunkTokens"]
        if vllm_config is not None and vllm_config.cache_config.block_size != self.block_size:
            raise ValueError("kvfabric model.chunkTokens must equal vLLM's block_size")
        self.namespace = config.get("namespace")
        self.key_mode = config.get("key_mode", "vllm")
        if self.key_mode not in ("vllm", "kvfabric"):
            raise ValueError("key_mode must be 'vllm' or 'kvfabric'")
        self.hash_seed = config.get("python_hash_seed")
        self.timeout_s = float(config.get("timeout_s", 10.0))
        self.link = AgentLink(
            config["socket_path"],
            timeout_s=self.timeout_s,
            reconnect_backoff_s=float(config.get("reconnect_backoff_s", 1.0)),
            profile=self.profile,
            name=f"vllm-{self.role}",
        )
        # scheduler state
        self._reqs = {}
        # worker state
        self._meta = None
        self._kv = {}
        self._layer_index = {}
        self._pending = []
        self._load_errors = set()
        self._save_slots = []
        self._regions = {}

    # ---- keys ------------------------------------------------------------------------------

    def _agent_tokens(self, request):
        prompt = list(request.prompt_token_ids)
        n = len(prompt) // self.block_size
        if self.key_mode == "kvfabric":
            return prompt[: n * self.block_size]
        hashes = list(getattr(request, "block_hashes", None) or [])[:n]
        if len(hashes) < n:
            hashes = vllm_block_hashes(prompt, self.block_size, self.hash_seed)
        return keys_to_tokens(hashes, self.block_size)

    # ---- scheduler side --------------------------------------------------------------------

    def get_num_new_matched_tokens(self, request, num_computed_tokens):
        """(tokens the agent can supply beyond num_computed_tokens, load_async=False)."""
        prompt_len = len(request.prompt_token_ids)
        tokens = self._agent_tokens(request)
        hit_chunks = 0
        client = self.link.get()
        if client is not None and tokens:
            try:
                hit_chunks = client.lookup(tokens, self.model, self.namespace) // self.block_size
            except (AgentUnavailable, KvfError) as e:
                self._lookup_failed(e)
        hit = hit_chunks * self.block_size
        if hit >= prompt_len:
            # vLLM must compute at least one token: recompute the last block.
            hit = ((prompt_len - 1) // self.block_size) * self.block_size
        ext = max(0, hit - num_computed_tokens)
        self._reqs[request.request_id] = {
            "tokens": tokens,
            "computed": num_computed_tokens,
            "ext": ext,
            "prompt_len": prompt_len,
            "load": None,
        }
        return ext, False

    def _lookup_failed(self, err):
        if isinstance(err, AgentUnavailable):
            self.link.failed(err)
        else:
            log.warning("kvfabric lookup failed: %s", err)

    def update_state_after_alloc(self, request, blocks, num_external_tokens):
        st = self._reqs.get(request.request_id)
        if st is None or num_external_tokens == 0:
            return
        block_ids = list(blocks.get_block_ids()[0])
        start = st["computed"] // self.block_size
        end = (st["computed"] + num_external_tokens) // self.block_size
        st["load"] = LoadSpec(
            request.request_id, st["tokens"][: end * self.block_size], block_ids[:end], start, end
        )

    def build_connector_meta(self, scheduler_output):
        meta = KvfabricConnectorMetadata()
        for st in self._reqs.values():
            if st["load"] is not None:
                meta.loads.append(st["load"])
                st["load"] = None
        for new in getattr(scheduler_output, "scheduled_new_reqs", []):
            st = self._reqs.get(new.req_id)
            if st is None:
                continue
            chunks = len(st["tokens"]) // self.block_size
            scheduled = scheduler_output.num_scheduled_tokens.get(new.req_id, 0)
            computed_after = new.num_computed_tokens + scheduled
            # Everything this step computes that is a full chunk and not already cached.
            cached_chunks = (st["computed"] + st["ext"]) // self.block_size
            if chunks > cached_chunks and computed_after >= chunks * self.block_size:
                meta.saves.append(SaveSpec(new.req_id, st["tokens"], list(new.block_ids[0])[:chunks], chunks))
        return meta

    def request_finished(self, request, block_ids):
        """Saves complete within the step (wait_for_save), so blocks can be freed at once."""
        self._reqs.pop(request.request_id, None)
        return False, None

    # ---- worker side -----------------------------------------------------------------------

    def register_kv_caches(self, kv_caches):
        if len(kv_caches) != self.profile["layers"]:
            raise ValueError(f"{len(kv_caches)} KV cache layers, the kvfabric profile has {self.profile['layers']}")
        self._kv = dict(kv_caches)
        self._layer_index = {name: i for i, name in enumerate(kv_caches)}

    def bind_connector_metadata(self, metadata):
        self._meta = metadata

    def clear_connector_metadata(self):
        self._finish_loads()
        self._meta = None
        self._save_slots = []

    def start_load_kv(self, forward_context=None, **kwargs):
        loads = self._meta.loads if self._meta is not None else []
        if not loads:
            return
        client = self.link.get()
        if client is None:
            for spec in loads:
                self._fail_blocks(spec, spec.start)
            return
        layout = client.layout(self.model)
        total = sum(client.bytes_for(self.model, s.end) for s in loads)
        try:
            region = self._region(client, "load", total)
            base = 0
            for spec in loads:
                offsets = client.group_offsets(self.model, spec.end, base)
                base += client.bytes_for(self.model, spec.end)
                rid = client.submit_get(spec.tokens, region, offsets, self.model, self.namespace, spec.end, events=True)
                views = BlockViews(region.tensor(), layout, offsets)
                self._pending.append({"spec": spec, "rid": rid, "views": views, "landed": {}, "final": None, "copied": set()})
        except AgentUnavailable as e:
            self._connection_lost(e)
            sent = {id(p["spec"]) for p in self._pending}
            for spec in loads:
                if id(spec) not in sent:
                    self._fail_blocks(spec, spec.start)

    def wait_for_layer_load(self, layer_name):
        layer = self._layer_index[layer_name]
        for p in self._pending:
            if p["final"] is None or layer not in p["copied"]:
                g = p["views"].layer_group[layer][0]
                self._await_group(p, g)
                self._copy_layer(p, layer, self._landed(p, g))

    def save_kv_layer(self, layer_name, kv_layer, attn_metadata=None, **kwargs):
        saves = self._meta.saves if self._meta is not None else []
        if not saves:
            return
        client = self.link.get()
        if client is None:
            return
        try:
            if not self._save_slots:
                layout = client.layout(self.model)
                total = sum(client.bytes_for(self.model, s.chunks) for s in saves)
                region = self._region(client, "save", total)
                base = 0
                for spec in saves:
                    offsets = client.group_offsets(self.model, spec.chunks, base)
                    base += client.bytes_for(self.model, spec.chunks)
                    self._save_slots.append((spec, region, offsets, BlockViews(region.tensor(), layout, offsets)))
        except AgentUnavailable as e:
            self._connection_lost(e)
            return
        layer = self._layer_index[layer_name]
        for spec, _region, _offsets, views in self._save_slots:
            for chunk, block_id in enumerate(spec.block_ids[: spec.chunks]):
                # paged [2, block_size, H, D] -> kvfabric [2, H, chunkTokens, D]
                views.block(layer, chunk).copy_(kv_layer[:, block_id].permute(0, 2, 1, 3))

    def wait_for_save(self):
        self._finish_loads()
        if not self._save_slots:
            return
        client = self.link.get()
        if client is None:
            return
        try:
            rids = []
            for spec, region, offsets, _views in self._save_slots:
                # Never store a block whose load failed: its paged contents are not its KV.
                chunks = self._good_prefix(spec)
                if chunks > 0:
                    rids.append((spec, client.submit_put(spec.tokens, region, offsets, self.model, self.namespace, chunks)))
            for spec, rid in rids:
                try:
                    client.wait(rid)
                except KvfError as e:
                    if isinstance(e, AgentUnavailable):
                        raise
                    log.warning("kvfabric save of %s failed: %s", spec.req_id, e)
        except AgentUnavailable as e:
            self._connection_lost(e)
        self._save_slots = []

    def _good_prefix(self, spec):
        for chunk, block_id in enumerate(spec.block_ids[: spec.chunks]):
            if block_id in self._load_errors:
                return chunk
        return spec.chunks

    def get_finished(self, finished_req_ids):
        return None, None

    def get_block_ids_with_load_errors(self):
        self._finish_loads()
        out, self._load_errors = self._load_errors, set()
        return out

    # ---- internals -------------------------------------------------------------------------

    def _region(self, client, kind, size):
        r = self._regions.get(kind)
        if r is not None and r[0] is client and r[1].size >= size:
            return r[1]
        if r is not None and r[0] is client:
            client.free_region(r[1])
        region = client.create_region(max(size, 1))
        self._regions[kind] = (client, region)
        return region

    def _await_group(self, p, g):
        deadline = time.monotonic() + self.timeout_s
        client = self.link._client
        while g not in p["landed"] and p["final"] is None:
            if client is None or client.closed:
                p["final"] = p["spec"].start
                return
            try:
                for ev in client.poll_events(p["rid"], timeout_s=max(0.0, deadline - time.monotonic())):
                    p["landed"][ev["group"]] = ev["chunks"]
                if client.done(p["rid"]):
                    self._settle(client, p)
                elif time.monotonic() >= deadline:
                    raise AgentUnavailable(f"load not done within {self.timeout_s} s")
            except AgentUnavailable as e:
                self._connection_lost(e)
                return

    def _settle(self, client, p):
        try:
            p["final"] = client.wait(p["rid"])["chunks"]
        except AgentUnavailable:
            raise
        except KvfError as e:
            log.warning("kvfabric load of %s failed: %s", p["spec"].req_id, e)
            p["final"] = 0

    def _landed(self, p, g):
        landed = p["landed"].get(g)
        if p["final"] is not None:
            return p["final"] if landed is None else min(landed, p["final"])
        return landed or 0

    def _copy_layer(self, p, layer, chunks):
        spec, views = p["spec"], p["views"]
        kv = self._kv[list(self._layer_index)[layer]]
        for chunk in range(spec.start, min(chunks, spec.end)):
            # kvfabric [2, H, chunkTokens, D] -> paged [2, block_size, H, D]
            kv[:, spec.block_ids[chunk]].copy_(views.block(layer, chunk).permute(0, 2, 1, 3))
        p["copied"].add(layer)

    def _finish_loads(self):
        for p in self._pending:
            if p["final"] is None:
                client = self.link._client
                try:
                    if client is None or client.closed:
                        raise AgentUnavailable("connection lost")
                    # wait() drains the remaining events; bounded by the client's timeout.
                    self._settle(client, p)
                except AgentUnavailable as e:
                    self._connection_lost(e)
            final = p["final"]
            for layer in range(len(self._layer_index)):
                if layer not in p["copied"]:
                    self._copy_layer(p, layer, final)
            self._fail_blocks(p["spec"], final)
        self._pending = []

    def _fail_blocks(self, spec, good_chunks):
        for chunk in range(max(spec.start, good_chunks), spec.end):
            self._load_errors.add(spec.block_ids[chunk])

    def _connection_lost(self, err):
        self.link.failed(err)
        self._regions.clear()
        for p in self._pending:
            if p["final"] is None:
                p["final"] = p["spec"].start
