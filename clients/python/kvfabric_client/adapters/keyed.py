"""Per-key storage over the agent, shared by the SGLang and LMCache adapters: each engine key is
stored as its own one-chunk prompt (keys.key_tokens), its value being exactly one chunk's bytes
(sum of the profile's blockBytes) laid out as the engine gives them."""

from ..errors import AgentUnavailable, KvfError
from ..keys import key_tokens
from .common import AgentLink, log


class KeyedStore:
    def __init__(self, socket_path, profile, namespace=None, timeout_s=10.0, reconnect_backoff_s=1.0, name="keyed"):
        self.profile = dict(profile)
        self.model = self.profile["id"]
        self.chunk = self.profile["chunkTokens"]
        self.namespace = namespace
        self.link = AgentLink(socket_path, timeout_s, reconnect_backoff_s, self.profile, name)
        self._region = None

    def value_bytes(self):
        c = self.link.get()
        if c is None:
            return None
        return c.bytes_for(self.model, 1)

    def tokens(self, key):
        return key_tokens(key, self.chunk)

    def exists_many(self, keys):
        """Per key: stored or not (False for every key while the agent is unreachable)."""
        c = self.link.get()
        if c is None or not keys:
            return [False] * len(keys)
        try:
            hits = c.lookup_many([self.tokens(k) for k in keys], self.model, self.namespace)
        except KvfError as e:
            self._failed(e)
            return [False] * len(keys)
        return [h >= self.chunk for h in hits]

    def leading_hits(self, keys):
        n = 0
        for ok in self.exists_many(keys):
            if not ok:
                break
            n += 1
        return n

    def get_many(self, keys, write):
        """write(i, region_bytes_view) is called for each key found intact; returns found flags."""
        c = self.link.get()
        if c is None or not keys:
            return [False] * len(keys)
        try:
            vb = c.bytes_for(self.model, 1)
            region = self._scratch(c, vb * len(keys))
            rids = [
                c.submit_get(self.tokens(k), region, c.group_offsets(self.model, 1, i * vb), self.model, self.namespace, 1)
                for i, k in enumerate(keys)
            ]
            found = []
            for i, rid in enumerate(rids):
                try:
                    ok = c.wait(rid)["chunks"] >= 1
                except AgentUnavailable:
                    raise
                except KvfError as e:
                    log.warning("kvfabric get failed: %s", e)
                    ok = False
                if ok:
                    write(i, region.buf[i * vb : (i + 1) * vb])
                found.append(ok)
            return found
        except AgentUnavailable as e:
            self._failed(e)
            return [False] * len(keys)

    def set_many(self, keys, read):
        """read(i, region_bytes_view) fills key i's value; returns per-key success."""
        c = self.link.get()
        if c is None or not keys:
            return [False] * len(keys)
        try:
            vb = c.bytes_for(self.model, 1)
            region = self._scratch(c, vb * len(keys))
            for i in range(len(keys)):
                read(i, region.buf[i * vb : (i + 1) * vb])
            rids = [
                c.submit_put(self.tokens(k), region, c.group_offsets(self.model, 1, i * vb), self.model, self.namespace, 1)
                for i, k in enumerate(keys)
            ]
            out = []
            for rid in rids:
                try:
                    r = c.wait(rid)
                    out.append(r["tokensIndexed"] >= self.chunk)
                except AgentUnavailable:
                    raise
                except KvfError as e:
                    log.warning("kvfabric put failed: %s", e)
                    out.append(False)
            return out
        except AgentUnavailable as e:
            self._failed(e)
            return [False] * len(keys)

    def close(self):
        self.link.close()
        self._region = None

    def _scratch(self, c, size):
        if self._region is not None and self._region[0] is c and self._region[1].size >= size:
            return self._region[1]
        if self._region is not None and self._region[0] is c:
            c.free_region(self._region[1])
        r = c.create_region(max(size, 1))
        self._region = (c, r)
        return r

    def _failed(self, e):
        if isinstance(e, AgentUnavailable):
            self.link.failed(e)
            self._region = None
        else:
            log.warning("kvfabric: %s", e)
