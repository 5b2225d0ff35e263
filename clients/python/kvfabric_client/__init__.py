"""kvfabric_client: talk to the local kvfabric agent (docs/agent-protocol.md). Standard library
only; torch is used where an API takes tensors."""

from .client import PROTOCOL_VERSION, Client, Region
from .errors import AgentUnavailable, KvfError

__all__ = ["Client", "Region", "KvfError", "AgentUnavailable", "PROTOCOL_VERSION"]
