"""What a transfer reports: typed results of DummyDownload and DummyUpload."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = [
    "ChunkCallback",
    "ChunkSink",
    "DownloadResult",
    "FetchResult",
    "UploadReceipt",
    "UploadResult",
]

ChunkCallback = Callable[[int], object]
"""Called with the byte count of each chunk received or sent (progress bars)."""

ChunkSink = Callable[[int, bytes], object]
"""Called with (file offset, data) of each chunk a real download receives."""


@dataclass(frozen=True, slots=True)
class FetchResult:
    """What `fetch_file` wrote: a verified file, and where its bytes came from."""

    name: str
    path: str
    size: int
    sha256: str
    owners: list[str]
    """Peer ids of the owners used (those that failed mid-way included)."""
    failed_owners: list[str]
    bytes_fetched: int
    """Bytes received in this run (a resumed download fetched fewer than `size`)."""
    resumed_bytes: int
    seconds: float
    owner_paths: dict[str, str] = field(default_factory=dict)
    """Peer id -> the path of the file each owner of `owners` served (relative to its
    shared folder: one name may sit in different folders on different owners)."""

    @property
    def mb_per_s(self) -> float:
        return _mb_per_s(self.bytes_fetched, self.seconds)


@dataclass(frozen=True, slots=True)
class DownloadResult:
    """What one DummyDownload streamed."""

    name: str
    bytes: int
    chunks: int
    seconds: float
    address: str
    offset: int = 0
    path: str = ""
    """The path asked for, relative to the owner's shared folder ("" when by name)."""

    @property
    def mb_per_s(self) -> float:
        """Throughput in decimal megabytes per second."""
        return _mb_per_s(self.bytes, self.seconds)


@dataclass(frozen=True, slots=True)
class UploadReceipt:
    """The server's `UploadStatus`, typed."""

    ok: bool
    bytes_received: int
    chunks: int
    checksum: str
    message: str
    name: str


@dataclass(frozen=True, slots=True)
class UploadResult:
    """What one DummyUpload sent, and what the server says it received."""

    address: str
    name: str
    bytes_sent: int
    chunks_sent: int
    seconds: float
    checksum: str
    """crc32 of every byte sent, in the server's format: `crc32:<8 hex digits>`."""
    receipt: UploadReceipt

    @property
    def verified(self) -> bool:
        """The server received every byte and its checksum matches ours."""
        return (
            self.receipt.checksum.lower() == self.checksum
            and self.receipt.bytes_received == self.bytes_sent
        )

    @property
    def mb_per_s(self) -> float:
        """Throughput in decimal megabytes per second."""
        return _mb_per_s(self.bytes_sent, self.seconds)


def _mb_per_s(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e6 if seconds > 0 else 0.0
