"""Client for the local kvfabric agent: a unix socket carrying small JSON frames, and shared-memory
regions carrying the KV bytes (docs/agent-protocol.md). Standard library only; torch optional.

A Client is one connection and is not thread-safe (one engine thread drives it). Requests may be
pipelined: `submit()` sends and returns a request id, `wait()` collects the reply.
"""

import json
import mmap
import os
import socket
import struct
import time

from .errors import AgentUnavailable, KvfError

PROTOCOL_VERSION = 1
_HEADER = struct.Struct(">I")
# Replies are small; this only guards against a corrupt length from a broken agent.
_REPLY_BYTES_MAX = 64 * 2**20


class Region:
    """A shared-memory region: the agent's mapping and ours of the same tmpfs file."""

    def __init__(self, region_id, path, size):
        self.id = region_id
        self.size = size
        fd = os.open(path, os.O_RDWR)
        try:
            self._mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        # Both sides hold mappings now; the name is no longer needed, so nothing can leak in
        # /dev/shm even if the agent and this process are both killed.
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        self.buf = memoryview(self._mm)

    def tensor(self):
        """The region as a flat torch.uint8 tensor sharing its memory (needs torch)."""
        import torch

        return torch.frombuffer(self._mm, dtype=torch.uint8)

    def close(self):
        self.buf.release()
        try:
            self._mm.close()
        except BufferError:
            # a torch view still exports the buffer: the mapping goes when that view is collected
            pass


class Client:
    """`Client(socket_path)`: connects and says hello (raises AgentUnavailable when it cannot).

    timeout_s bounds every wait for a reply: past it the connection is considered dead
    (AgentUnavailable), which is what lets an engine give up on a stalled agent in bounded time.
    """

    def __init__(self, socket_path, timeout_s=30.0, connect_timeout_s=5.0, name="kvfabric-python"):
        self.socket_path = socket_path
        self.timeout_s = timeout_s
        self._next_id = 1
        self._replies = {}
        self._events = {}
        self._rbuf = bytearray()
        self._regions = {}
        self._layouts = {}
        self._closed = False
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(connect_timeout_s)
        try:
            self._sock.connect(socket_path)
        except OSError as e:
            self._sock.close()
            self._closed = True
            raise AgentUnavailable(f"cannot connect to the agent at {socket_path}: {e}") from e
        self.hello_info = self.call("hello", client=name)

    # ---- framing ---------------------------------------------------------------------------

    def submit(self, op, **args):
        """Send one request; returns its id (collect the reply with wait(id))."""
        if self._closed:
            raise AgentUnavailable("client is closed")
        rid = self._next_id
        self._next_id += 1
        body = json.dumps({"v": PROTOCOL_VERSION, "id": rid, "op": op, **args}).encode()
        self._send_raw(_HEADER.pack(len(body)) + body)
        return rid

    def _send_raw(self, data):
        try:
            self._sock.settimeout(self.timeout_s)
            self._sock.sendall(data)
        except OSError as e:
            self._broken(f"send failed: {e}")

    def wait(self, rid, timeout_s=None, on_event=None):
        """The reply's result; KvfError for an error reply; AgentUnavailable past the timeout."""
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        while rid not in self._replies:
            self._drain_events(rid, on_event)
            self._read_frame(deadline)
        self._drain_events(rid, on_event)
        reply = self._replies.pop(rid)
        self._events.pop(rid, None)
        if reply.get("ok"):
            return reply.get("result")
        err = reply.get("error") or {}
        raise KvfError(err.get("code", 1900), err.get("name", "INTERNAL"), err.get("message", ""), err.get("details"))

    def poll_events(self, rid, timeout_s=0.0):
        """Events for a request, reading for up to timeout_s until one (or its reply) is there.
        The reply, if it came, stays queued for wait(); AgentUnavailable if the connection broke."""
        deadline = time.monotonic() + timeout_s
        while rid not in self._replies and not self._events.get(rid):
            if time.monotonic() >= deadline:
                break
            try:
                self._read_frame(deadline, raise_on_timeout=False)
            except _Timeout:
                break
        return self._events.pop(rid, [])

    def done(self, rid):
        return rid in self._replies

    def call(self, op, timeout_s=None, **args):
        return self.wait(self.submit(op, **args), timeout_s=timeout_s)

    def _drain_events(self, rid, on_event):
        if on_event is not None:
            for ev in self._events.pop(rid, []):
                on_event(ev)

    def _read_frame(self, deadline, raise_on_timeout=True):
        while True:
            if len(self._rbuf) >= 4:
                (n,) = _HEADER.unpack_from(self._rbuf)
                if n > _REPLY_BYTES_MAX:
                    self._broken(f"reply frame of {n} bytes")
                if len(self._rbuf) >= 4 + n:
                    body = bytes(self._rbuf[4 : 4 + n])
                    del self._rbuf[: 4 + n]
                    self._dispatch(json.loads(body))
                    return
            left = deadline - time.monotonic()
            if left <= 0:
                if not raise_on_timeout:
                    raise _Timeout()
                self._broken(f"no reply from the agent within {self.timeout_s} s")
            try:
                self._sock.settimeout(left)
                chunk = self._sock.recv(1 << 16)
            except socket.timeout:
                continue
            except OSError as e:
                self._broken(f"connection to the agent failed: {e}")
            if not chunk:
                self._broken("the agent closed the connection")
            self._rbuf += chunk

    def _dispatch(self, msg):
        rid = msg.get("id")
        if "event" in msg:
            self._events.setdefault(rid, []).append(msg)
        elif rid is None:
            # A connection-level error (e.g. a frame the agent could not parse).
            err = msg.get("error") or {}
            self._replies.setdefault(None, msg)
            if err.get("name") == "PAYLOAD_TOO_LARGE":
                self._broken(err.get("message", "frame too large"))
        else:
            self._replies[rid] = msg

    def _broken(self, why):
        self.close()
        raise AgentUnavailable(why)

    # ---- operations ------------------------------------------------------------------------

    def register_model(self, profile):
        """profile: {id, layers, kvHeads, headDim, dtype, chunkTokens}; returns the layout."""
        r = self.call("register_model", profile=profile)
        self._layouts[profile["id"]] = r["layout"]
        return r["layout"]

    def layout(self, model):
        """{chunkTokens, groups: [{firstLayer, layers}], blockBytes: [...], profile}."""
        if model not in self._layouts:
            self._layouts[model] = self.call("layout", model=model)
        return self._layouts[model]

    def create_region(self, size):
        r = self.call("region_create", bytes=int(size))
        region = Region(r["region"], r["path"], r["bytes"])
        self._regions[region.id] = region
        return region

    def free_region(self, region):
        self._regions.pop(region.id, None)
        try:
            self.call("region_free", region=region.id)
        finally:
            region.close()

    def lookup(self, tokens, model, namespace=None):
        """Cached prefix length in tokens (whole chunks)."""
        return self.call("lookup", **_call(model, namespace), tokens=list(tokens))["tokens"]

    def lookup_many(self, prompts, model, namespace=None):
        r = self.call("lookup_many", **_call(model, namespace), prompts=[list(p) for p in prompts])
        return r["tokens"]

    def batch_exists(self, prompts, model, namespace=None):
        """Number of consecutive prompts, from the first, whose every full chunk is cached."""
        if not prompts:
            return 0
        chunk = self.layout(model)["chunkTokens"]
        hits = self.lookup_many(prompts, model, namespace)
        n = 0
        for p, h in zip(prompts, hits):
            full = (len(p) // chunk) * chunk
            if full == 0 or h < full:
                break
            n += 1
        return n

    def group_offsets(self, model, chunks, base=0):
        """Offsets of each layer group's slots when groups lie back to back from `base`."""
        out, at = [], base
        for bb in self.layout(model)["blockBytes"]:
            out.append(at)
            at += bb * chunks
        return out

    def bytes_for(self, model, chunks):
        return sum(self.layout(model)["blockBytes"]) * chunks

    def submit_get(self, tokens, region, offsets, model, namespace=None, chunks=None, events=False):
        args = dict(_call(model, namespace), tokens=list(tokens), region=region.id, offsets=list(offsets), events=events)
        if chunks is not None:
            args["chunks"] = chunks
        return self.submit("get", **args)

    def submit_put(self, tokens, region, offsets, model, namespace=None, chunks=None):
        args = dict(_call(model, namespace), tokens=list(tokens), region=region.id, offsets=list(offsets))
        if chunks is not None:
            args["chunks"] = chunks
        return self.submit("put", **args)

    def get_into(self, tokens, dest, model, namespace=None):
        """Fill `dest` (a writable memoryview/bytearray or a torch tensor, any dtype, contiguous)
        with the longest cached prefix of `tokens`, in kvfabric's layout: layer group after layer
        group, each `chunks x [layersInGroup, 2, kvHeads, chunkTokens, headDim]`. Returns the
        tokens filled; bytes past them are unspecified."""
        chunks = len(tokens) // self.layout(model)["chunkTokens"]
        region = self._scratch(model, chunks)
        offsets = self.group_offsets(model, chunks)
        r = self.wait(self.submit_get(tokens, region, offsets, model, namespace, chunks))
        _copy_out(region, dest, self.bytes_for(model, chunks))
        return r["tokens"]

    def put(self, tokens, src, model, namespace=None):
        """Store the KV of the full chunks of `tokens` from `src` (same layout as get_into)."""
        chunks = len(tokens) // self.layout(model)["chunkTokens"]
        region = self._scratch(model, chunks)
        _copy_in(region, src, self.bytes_for(model, chunks))
        offsets = self.group_offsets(model, chunks)
        return self.wait(self.submit_put(tokens, region, offsets, model, namespace, chunks))

    def stats(self):
        return self.call("stats")

    def close(self):
        if self._closed:
            return
        self._closed = True
        try:
            self._sock.close()
        finally:
            for r in self._regions.values():
                r.close()
            self._regions.clear()

    @property
    def closed(self):
        return self._closed

    def _scratch(self, model, chunks):
        need = max(1, self.bytes_for(model, chunks))
        cur = self._regions.get(getattr(self, "_scratch_id", None))
        if cur is None or cur.size < need:
            if cur is not None:
                self.free_region(cur)
            cur = self.create_region(need)
            self._scratch_id = cur.id
        return cur

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _Timeout(Exception):
    pass


def _call(model, namespace):
    return {"model": model} if namespace is None else {"model": model, "namespace": namespace}


def _flat_bytes(obj):
    """A flat writable byte view of a memoryview/bytearray or a contiguous torch tensor."""
    if hasattr(obj, "data_ptr"):  # torch tensor
        if not obj.is_contiguous():
            raise KvfError(1102, "SHAPE_MISMATCH", "tensor must be contiguous")
        return obj.view(-1).view(__import__("torch").uint8)
    return memoryview(obj).cast("B")


def _copy_out(region, dest, n):
    flat = _flat_bytes(dest)
    if hasattr(flat, "data_ptr"):
        flat[:n].copy_(region.tensor()[:n])
    else:
        flat[:n] = region.buf[:n]


def _copy_in(region, src, n):
    flat = _flat_bytes(src)
    if hasattr(flat, "data_ptr"):
        region.tensor()[:n].copy_(flat[:n])
    else:
        region.buf[:n] = flat[:n]
