"""What every adapter shares: a lazily (re)connected Client with a reconnect back-off, so an
agent that died turns into cache misses and load errors, never into an engine crash."""

import logging
import time

from ..client import Client
from ..errors import AgentUnavailable

log = logging.getLogger("kvfabric_client")


class AgentLink:
    """Holds one Client; `get()` returns it or None while the agent is unreachable.

    reconnect_backoff_s: after a failure, no new connection is tried for this long (an engine
    step must not pay a connect timeout every time while the agent is down).
    """

    def __init__(self, socket_path, timeout_s=10.0, reconnect_backoff_s=1.0, profile=None, name="kvfabric"):
        self.socket_path = socket_path
        self.timeout_s = timeout_s
        self.reconnect_backoff_s = reconnect_backoff_s
        self.profile = profile
        self.name = name
        self._client = None
        self._down_since = None

    def get(self):
        if self._client is not None and not self._client.closed:
            return self._client
        self._client = None
        if self._down_since is not None and time.monotonic() - self._down_since < self.reconnect_backoff_s:
            return None
        try:
            c = Client(self.socket_path, timeout_s=self.timeout_s, connect_timeout_s=min(self.timeout_s, 5.0), name=self.name)
            if self.profile is not None:
                c.register_model(self.profile)
        except AgentUnavailable as e:
            self.failed(e)
            return None
        self._client = c
        self._down_since = None
        return c

    def failed(self, err):
        log.warning("kvfabric agent unavailable: %s", err)
        if self._client is not None:
            self._client.close()
        self._client = None
        self._down_since = time.monotonic()

    def close(self):
        if self._client is not None:
            self._client.close()
        self._client = None
