"""SGLang HiCache storage backend (the HiCacheStorage method set: get, batch_get, set, batch_set,
exists, batch_exists) backed by the kvfabric agent.

Keys are SGLang's page keys (hex strings of its chained page hashes); each page is one kvfabric
chunk (profile chunkTokens = SGLang page_size) and a value is one page's KV as a flat tensor of
exactly sum(blockBytes) bytes, stored as given (byte-exact round trip).
"""

from .keyed import KeyedStore


def _bytes_of(t):
    import torch

    return t.contiguous().view(-1).view(torch.uint8)


class KvfabricHiCacheStorage:
    """config: {socket_path, model: profile, namespace?, timeout_s?, reconnect_backoff_s?}."""

    def __init__(self, config):
        self.store = KeyedStore(
            config["socket_path"],
            config["model"],
            config.get("namespace"),
            float(config.get("timeout_s", 10.0)),
            float(config.get("reconnect_backoff_s", 1.0)),
            name="sglang-hicache",
        )

    def get(self, key, target_location=None, target_sizes=None):
        """The page into target_location (a tensor), or None on a miss."""
        out = self.batch_get([key], None if target_location is None else [target_location])
        return out[0]

    def batch_get(self, keys, target_locations=None, target_sizes=None):
        """Per key the filled tensor, or None where the page is not cached (or failed to load)."""
        import torch

        vb = self.store.value_bytes()
        targets = list(target_locations) if target_locations is not None else None
        if targets is None and vb is not None:
            targets = [torch.empty(vb, dtype=torch.uint8) for _ in keys]

        def write(i, view):
            _bytes_of(targets[i]).copy_(torch.frombuffer(view, dtype=torch.uint8))

        found = self.store.get_many(list(keys), write)
        return [targets[i] if ok else None for i, ok in enumerate(found)]

    def set(self, key, value=None, target_location=None, target_sizes=None):
        return self.batch_set([key], [value])

    def batch_set(self, keys, values=None, target_locations=None, target_sizes=None):
        """True when every page was stored."""
        import torch

        vals = list(values)

        def read(i, view):
            torch.frombuffer(view, dtype=torch.uint8).copy_(_bytes_of(vals[i]))

        return all(self.store.set_many(list(keys), read))

    def exists(self, key):
        return self.store.exists_many([key])[0]

    def batch_exists(self, keys):
        """Number of consecutive keys, from the first, that are stored."""
        return self.store.leading_hits(list(keys))

    def close(self):
        self.store.close()
