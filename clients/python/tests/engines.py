"""Engine-shaped loops: the adapters called in the order the engines call them."""

import math
from dataclasses import dataclass

import torch

from kvfabric_client.adapters.vllm import KvfabricConnector
from kvfabric_client.keys import vllm_block_hashes
from tests.harness import BS, PROFILE, expected_kv

HASH_SEED = "0"


@dataclass
class Request:
    request_id: str
    prompt_token_ids: list
    block_hashes: list


class Blocks:
    def __init__(self, ids):
        self.ids = ids

    def get_block_ids(self):
        return (list(self.ids),)


@dataclass
class NewRequestData:
    req_id: str
    prompt_token_ids: list
    block_ids: tuple
    num_computed_tokens: int


@dataclass
class SchedulerOutput:
    scheduled_new_reqs: list
    num_scheduled_tokens: dict


class MiniVllm:
    """Scheduler + worker connector instances (separate agent connections, as in vLLM), paged
    KV caches [2, num_blocks, block_size, H, D] per layer, no local prefix cache."""

    def __init__(self, config, num_blocks=64):
        self.sched = KvfabricConnector(role="scheduler", config=config)
        self.worker = KvfabricConnector(role="worker", config=config)
        shape = (2, num_blocks, BS, PROFILE["kvHeads"], PROFILE["headDim"])
        self.names = [f"model.layers.{l}.self_attn.attn" for l in range(PROFILE["layers"])]
        self.kv = {n: torch.full(shape, float("nan"), dtype=torch.float16) for n in self.names}
        self.worker.register_kv_caches(self.kv)
        self.free = list(range(num_blocks))
        self.before_load = None  # test hooks: called around start_load_kv
        self.on_loading = None

    def _write(self, layer, tokens, ids, positions):
        if not positions:
            return
        kv = expected_kv(layer, tokens, positions)
        for i, p in enumerate(positions):
            self.kv[self.names[layer]][:, ids[p // BS], p % BS] = kv[:, i]

    def run(self, req_id, tokens):
        """One request end to end; returns (external tokens matched, load error block ids)."""
        req = Request(req_id, tokens, vllm_block_hashes(tokens, BS, HASH_SEED))
        ext, load_async = self.sched.get_num_new_matched_tokens(req, 0)
        assert load_async is False
        ids = [self.free.pop() for _ in range(math.ceil(len(tokens) / BS))]
        self.sched.update_state_after_alloc(req, Blocks(ids), ext)
        out = SchedulerOutput([NewRequestData(req_id, tokens, (ids,), 0)], {req_id: len(tokens)})
        meta = self.sched.build_connector_meta(out)
        self.worker.bind_connector_metadata(meta)
        if self.before_load is not None:
            self.before_load()
        self.worker.start_load_kv(None)
        if self.on_loading is not None:
            self.on_loading()
        for layer, name in enumerate(self.names):
            self.worker.wait_for_layer_load(name)
            self._write(layer, tokens, ids, list(range(ext, len(tokens))))  # the forward pass
            self.worker.save_kv_layer(name, self.kv[name], None)
        self.worker.wait_for_save()
        errors = self.worker.get_block_ids_with_load_errors()
        self.worker.clear_connector_metadata()
        # vLLM reschedules failed blocks; here: recompute them in every layer.
        for b in errors:
            i = ids.index(b)
            for layer in range(len(self.names)):
                self._write(layer, tokens, ids, list(range(i * BS, min(len(tokens), (i + 1) * BS))))
        self.sched.request_finished(req, ids)
        self.worker.get_finished({req_id})
        self.verify(tokens, ids)
        self.free.extend(ids)
        return ext, errors

    def close(self):
        self.sched.link.close()
        self.worker.link.close()

    def verify(self, tokens, ids):
        for layer, name in enumerate(self.names):
            want = expected_kv(layer, tokens, list(range(len(tokens))))
            for p in range(len(tokens)):
                got = self.kv[name][:, ids[p // BS], p % BS]
                if not torch.equal(got.view(torch.int16), want[:, p].view(torch.int16)):
                    raise AssertionError(f"KV mismatch at layer {layer} position {p}")
