"""Typed errors of the kvfabric agent protocol (codes as in shared/errors.ts)."""

# The codes an engine adapter is likely to branch on; every other code still arrives as KvfError.
BAD_REQUEST = 1000
MALFORMED = 1001
UNKNOWN_OPERATION = 1002
VERSION_MISMATCH = 1003
PAYLOAD_TOO_LARGE = 1004
BATCH_TOO_LARGE = 1005
UNKNOWN_MODEL = 1100
SHAPE_MISMATCH = 1102
CLOSED = 1305
OUT_OF_RANGE = 1306
TIMEOUT = 1402
CUDA_UNAVAILABLE = 1403


class KvfError(Exception):
    """An error reply from the agent: `code` (number), `name` (e.g. 'OUT_OF_RANGE'), message."""

    def __init__(self, code, name, message, details=None):
        super().__init__(f"{name} ({code}): {message}")
        self.code = code
        self.name = name
        self.message = message
        self.details = details or {}


class AgentUnavailable(KvfError):
    """The agent cannot be reached: not running, crashed, or silent past the client's timeout.

    Raised for every request in flight when the connection breaks; the client is then closed and
    a new Client must be made (the adapters do that themselves, with a back-off).
    """

    def __init__(self, message):
        super().__init__(-1, "AGENT_UNAVAILABLE", message)
