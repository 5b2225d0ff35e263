"""LMCache remote connector (RemoteConnector's method set: exists, exists_sync, get, put, list,
close, and the batched forms batched_get, batched_put, batched_async_contains) backed by the
kvfabric agent. LMCache calls these as coroutines; each runs the (short, blocking) agent call.

Keys are LMCache CacheEngineKeys (anything with to_string(), or strings); a value is one
MemoryObj of one chunk (profile chunkTokens = LMCache chunk_size), its bytes stored as given.
`allocate(nbytes)` makes the MemoryObj a get returns (LMCache passes its allocator); the default
returns a BytesMemoryObj.
"""

from .keyed import KeyedStore


class BytesMemoryObj:
    """Minimal MemoryObj stand-in: byte_array (memoryview), get_size()."""

    def __init__(self, nbytes):
        self._b = bytearray(nbytes)
        self.byte_array = memoryview(self._b)

    def get_size(self):
        return len(self._b)


def _key_str(key):
    return key.to_string() if hasattr(key, "to_string") else str(key)


def _mem_bytes(obj):
    if hasattr(obj, "byte_array"):
        return memoryview(obj.byte_array).cast("B")
    import torch

    return memoryview(obj.tensor.contiguous().view(-1).view(torch.uint8).numpy())


class KvfabricRemoteConnector:
    """config: {socket_path, model: profile, namespace?, timeout_s?, reconnect_backoff_s?}."""

    def __init__(self, config, allocate=None):
        self.store = KeyedStore(
            config["socket_path"],
            config["model"],
            config.get("namespace"),
            float(config.get("timeout_s", 10.0)),
            float(config.get("reconnect_backoff_s", 1.0)),
            name="lmcache",
        )
        self.allocate = allocate or BytesMemoryObj
        self._stored = []

    def exists_sync(self, key):
        return self.store.exists_many([_key_str(key)])[0]

    async def exists(self, key):
        return self.exists_sync(key)

    async def get(self, key):
        return (await self.batched_get([key]))[0]

    async def batched_get(self, keys):
        vb = self.store.value_bytes()
        if vb is None:
            return [None] * len(keys)
        objs = [self.allocate(vb) for _ in keys]

        def write(i, view):
            _mem_bytes(objs[i])[:vb] = view

        found = self.store.get_many([_key_str(k) for k in keys], write)
        return [objs[i] if ok else None for i, ok in enumerate(found)]

    async def put(self, key, memory_obj):
        await self.batched_put([key], [memory_obj])

    async def batched_put(self, keys, memory_objs):
        objs = list(memory_objs)

        def read(i, view):
            view[:] = _mem_bytes(objs[i])[: len(view)]

        names = [_key_str(k) for k in keys]
        for name, ok in zip(names, self.store.set_many(names, read)):
            if ok and name not in self._stored:
                self._stored.append(name)

    async def batched_async_contains(self, lookup_id, keys, pin=False):
        """Number of consecutive keys, from the first, that are stored."""
        return self.store.leading_hits([_key_str(k) for k in keys])

    def support_batched_get(self):
        return True

    def support_batched_put(self):
        return True

    def support_batched_async_contains(self):
        return True

    async def list(self):
        """Keys this connector stored that are still cached. kvfabric indexes prefixes by hash, so
        it cannot enumerate keys written by others; LMCache uses list() only for diagnostics."""
        flags = self.store.exists_many(self._stored)
        return [k for k, ok in zip(self._stored, flags) if ok]

    async def close(self):
        self.store.close()
