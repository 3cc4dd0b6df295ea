"""The client's defaults and limits, in one place."""

from __future__ import annotations

from typing import Final

from peerfind.config import MAX_CHUNK_SIZE

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT_S",
    "DEFAULT_SEARCH_TIMEOUT_MS",
    "DEFAULT_STALL_TIMEOUT_S",
    "DEFAULT_TIMEOUT_S",
    "GRPC_MAX_MESSAGE_BYTES",
    "SEARCH_MARGIN_S",
]

DEFAULT_TIMEOUT_S: Final = 5.0
"""Deadline of one REST call (connect included), except `/search`."""
DEFAULT_CONNECT_TIMEOUT_S: Final = 3.0
DEFAULT_SEARCH_TIMEOUT_MS: Final = 2000
"""The directory's own default search deadline, assumed when none is given."""
SEARCH_MARGIN_S: Final = 1.0
"""Added to a search's deadline: the entry peer answers at its deadline, then the reply travels."""
DEFAULT_STALL_TIMEOUT_S: Final = 30.0
"""A download that receives nothing for this long fails (PeerStalled): an owner that
stops mid-stream must not hold a client for ever (the servers' own stall deadline)."""
GRPC_MAX_MESSAGE_BYTES: Final = MAX_CHUNK_SIZE + 64 * 1024
"""A chunk of the largest size plus room for the other fields of FileChunk."""
