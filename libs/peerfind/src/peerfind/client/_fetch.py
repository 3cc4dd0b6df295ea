"""`fetch_file`: a real download, from several owners at once, resumable, verified.

    hits = await locate(url, "movie.mkv")
    sha256, owners = pick_version(hits)       # or pick_version(hits, path="films/movie.mkv")
    result = await fetch_file(owners, Path("movie.mkv"), sha256=sha256, sources=3)

Each owner is asked for the path of its own hit (the same bytes may sit in different
folders on different owners), so a name that several folders hold is never served
from the wrong one. The file is cut into pieces of `piece_size` bytes. Up to
`sources` owners of the same SHA-256 each take the next missing piece and stream it
(`Download` pinned to that SHA-256, so no owner can serve another version) straight
into `PATH.part` at its offset. An owner that fails puts its piece back and stops;
the others take it. After each piece, `PATH.part.json` records the pieces done
(written to a temporary file and renamed, so it is never half-written); a later run
with the same version and piece size resumes from it. When every piece is in, the
whole `.part` is hashed, and renamed over PATH only if the digest is the one asked
for: a mismatch removes the partial file, so no wrong file is ever left at PATH.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from peerfind.api import SearchHit
from peerfind.client._defaults import DEFAULT_STALL_TIMEOUT_S
from peerfind.client._results import FetchResult
from peerfind.client._transfer import TransferClient
from peerfind.client._workflows import check_unambiguous, hits_at_path
from peerfind.errors import ClientError
from peerfind.tls import TlsFiles

__all__ = [
    "DEFAULT_PIECE_SIZE",
    "DEFAULT_SOURCES",
    "LocalWriteError",
    "fetch_file",
    "pick_version",
]

DEFAULT_PIECE_SIZE = 8 * 1024 * 1024
DEFAULT_SOURCES = 3
_HASH_READ = 1024 * 1024
_STATE_VERSION = 1

Progress = Callable[[int], object]
"""Called with the bytes gained (negative: a failed piece's bytes given back)."""


def pick_version(
    hits: list[SearchHit], sha256: str | None = None, path: str | None = None
) -> tuple[str, list[SearchHit]]:
    """The version to fetch and its owners (one hit per peer, with a gRPC address), each
    hit with the path that owner holds it at.

    The version is `sha256`, else the one most owners hold at `path` (when given),
    else the one most owners hold. Its owners are every peer holding those bytes,
    at whatever path. Without `sha256` or `path`, AmbiguousName when the name is at
    several paths that may hold different files (`check_unambiguous`): copies of one
    path that disagree are versions of one file, files in different folders are not.
    ClientError when no owner can serve a hashed copy.
    """
    if not hits:
        raise ClientError("no owner to download from")
    name = hits[0].name
    chosen_at = hits_at_path(hits, path) if path is not None else hits
    if sha256 is None and path is None:
        check_unambiguous(hits)
    where = f" at {path!r}" if path is not None else ""
    groups = _by_version(hits)
    if sha256 is not None:
        wanted = sha256.lower()
        if not any(h.sha256 and h.sha256.lower() == wanted for h in chosen_at):
            raise ClientError(f"no owner of {name!r}{where} holds the version with sha256 {sha256}")
        if wanted not in groups:
            raise ClientError(f"no owner of {name!r} with a gRPC address holds sha256 {sha256}")
        return wanted, _prefer(groups[wanted], path)
    candidates = _by_version(chosen_at)
    if not candidates:
        owners = ", ".join(sorted({hit.peer_id for hit in chosen_at}))
        raise ClientError(
            f"{name!r}{where} is on {owners}, but no owner has hashed it yet; retry in a moment"
        )
    best = max(candidates, key=lambda digest: len(candidates[digest]))
    return best, _prefer(groups[best], path)


def _by_version(hits: list[SearchHit]) -> dict[str, dict[str, list[SearchHit]]]:
    """Hashed hits with a gRPC address: sha256 -> peer id -> its hits (search order)."""
    groups: dict[str, dict[str, list[SearchHit]]] = {}
    for hit in hits:
        if hit.sha256 and hit.grpc_address:
            groups.setdefault(hit.sha256.lower(), {}).setdefault(hit.peer_id, []).append(hit)
    return groups


def _prefer(owners: dict[str, list[SearchHit]], path: str | None) -> list[SearchHit]:
    """One hit per owner: the one at `path` if it has it there, else its first."""
    return [next((h for h in held if h.path == path), held[0]) for held in owners.values()]


class LocalWriteError(ClientError):
    """The local disk refused a write (full, read-only, ...): no owner can help."""


def _disk_error(path: Path, exc: OSError) -> LocalWriteError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return LocalWriteError(f"disk full writing {path}")
    return LocalWriteError(f"cannot write {path}: {exc.strerror or exc}")


class _Part:
    """`PATH.part` and its record of done pieces `PATH.part.json`."""

    def __init__(self, output: Path, sha256: str, size: int, piece_size: int) -> None:
        self.path = output.with_name(output.name + ".part")
        self.state_path = output.with_name(output.name + ".part.json")
        self.sha256 = sha256
        self.size = size
        self.piece_size = piece_size
        self.pieces = -(-size // piece_size)
        self.done: set[int] = set()
        self.fd = -1

    def open(self) -> None:
        """Open the part file, resuming it when its record matches this download."""
        self.done = self._load()
        try:
            if self.done:
                self.fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
            else:
                self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC)
                if self.size:
                    # Reserve the space now: a full disk fails here, not at 90 %.
                    os.posix_fallocate(self.fd, 0, self.size)
                self.save()
        except OSError as exc:
            raise _disk_error(self.path, exc) from None

    def _load(self) -> set[int]:
        try:
            state = json.loads(self.state_path.read_text())
            if os.stat(self.path).st_size != self.size:
                return set()
        except (OSError, ValueError):
            return set()
        expected = {
            "version": _STATE_VERSION,
            "sha256": self.sha256,
            "size": self.size,
            "piece_size": self.piece_size,
        }
        if not isinstance(state, dict) or any(state.get(k) != v for k, v in expected.items()):
            return set()
        done = state.get("done")
        if not isinstance(done, list):
            return set()
        return {i for i in done if isinstance(i, int) and 0 <= i < self.pieces}

    def save(self) -> None:
        state = {
            "version": _STATE_VERSION,
            "sha256": self.sha256,
            "size": self.size,
            "piece_size": self.piece_size,
            "done": sorted(self.done),
        }
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(state))
            os.replace(tmp, self.state_path)
        except OSError as exc:
            raise _disk_error(self.state_path, exc) from None

    def write(self, offset: int, data: bytes) -> None:
        try:
            os.pwrite(self.fd, data, offset)
        except OSError as exc:
            raise _disk_error(self.path, exc) from None

    def piece_range(self, index: int) -> tuple[int, int]:
        start = index * self.piece_size
        return start, min(self.piece_size, self.size - start)

    def digest(self) -> str:
        h = hashlib.sha256()
        buf = bytearray(_HASH_READ)
        view = memoryview(buf)
        offset = 0
        while n := os.preadv(self.fd, [view], offset):
            h.update(view[:n])
            offset += n
        return h.hexdigest()

    def finish(self, output: Path) -> None:
        """fsync, rename over `output`, drop the record."""
        try:
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = -1
            os.replace(self.path, output)
            self.state_path.unlink(missing_ok=True)
            dir_fd = os.open(output.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise _disk_error(output, exc) from None

    def discard(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)
        self.state_path.unlink(missing_ok=True)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _check_output(output: Path, force: bool) -> None:
    if output.is_dir():
        raise ClientError(f"{output} is a directory")
    if output.exists() and not force:
        raise ClientError(f"{output} exists; pass --force to overwrite it")
    if not output.parent.is_dir():
        raise ClientError(f"no directory {output.parent} to write {output.name} into")


class _Scheduler:
    """Hands pieces to workers; a failed piece goes back to the front of the queue."""

    def __init__(self, pending: list[int]) -> None:
        self.pending = deque(pending)
        self.in_flight = 0
        self.changed = asyncio.Condition()

    async def take(self) -> int | None:
        async with self.changed:
            while not self.pending:
                if self.in_flight == 0:
                    return None
                await self.changed.wait()
            self.in_flight += 1
            return self.pending.popleft()

    async def settle(self, piece: int, ok: bool) -> None:
        async with self.changed:
            self.in_flight -= 1
            if not ok:
                self.pending.appendleft(piece)
            self.changed.notify_all()


async def fetch_file(
    owners: list[SearchHit],
    output: Path,
    *,
    sha256: str,
    sources: int = DEFAULT_SOURCES,
    piece_size: int = DEFAULT_PIECE_SIZE,
    force: bool = False,
    on_progress: Progress | None = None,
    tls: TlsFiles | None = None,
    rpc_timeout_s: float | None = None,
    stall_timeout_s: float | None = DEFAULT_STALL_TIMEOUT_S,
) -> FetchResult:
    """Download the version `sha256` of a file from up to `sources` of `owners`; an
    owner that sends nothing for `stall_timeout_s` counts as failed (its piece goes
    to another)."""
    if not owners:
        raise ClientError("no owner to download from")
    if sources < 1:
        raise ClientError("sources must be at least 1")
    if piece_size < 1:
        raise ClientError("piece size must be positive")
    name, size = owners[0].name, owners[0].size
    _check_output(output, force)
    part = _Part(output, sha256, size, piece_size)
    part.open()
    started = time.perf_counter()
    resumed = sum(part.piece_range(i)[1] for i in part.done)
    if on_progress is not None and resumed:
        on_progress(resumed)
    fetched = 0
    used = owners[:sources]
    failed: dict[str, str] = {}
    scheduler = _Scheduler([i for i in range(part.pieces) if i not in part.done])

    async def worker(owner: SearchHit) -> None:
        nonlocal fetched
        async with TransferClient(
            owner.grpc_address, tls=tls, timeout=rpc_timeout_s, stall_timeout=stall_timeout_s
        ) as client:
            while (piece := await scheduler.take()) is not None:
                start, length = part.piece_range(piece)
                got = 0

                def sink(offset: int, data: bytes) -> None:
                    nonlocal got
                    part.write(offset, data)
                    got += len(data)
                    if on_progress is not None:
                        on_progress(len(data))

                try:
                    await client.fetch_range(
                        name, start, length, sink, path=owner.path, sha256=sha256
                    )
                except ClientError as exc:
                    if on_progress is not None and got:
                        on_progress(-got)
                    await scheduler.settle(piece, ok=False)
                    if isinstance(exc, LocalWriteError):
                        raise
                    failed[owner.peer_id] = str(exc)
                    return
                fetched += got
                part.done.add(piece)
                part.save()
                await scheduler.settle(piece, ok=True)

    try:
        results = await asyncio.gather(*(worker(o) for o in used), return_exceptions=True)
        for outcome in results:
            if isinstance(outcome, BaseException):
                raise outcome
        if len(part.done) != part.pieces:
            why = "; ".join(f"{peer}: {error}" for peer, error in failed.items())
            raise ClientError(
                f"every owner failed ({why}); {len(part.done)} of {part.pieces} pieces are "
                f"in {part.path}: run again to resume"
            )
        digest = await asyncio.to_thread(part.digest)
        if digest != sha256:
            part.discard()
            raise ClientError(
                f"hash mismatch for {name}: got sha256 {digest}, expected {sha256}; "
                "the partial file was removed"
            )
        part.finish(output)
    finally:
        part.close()
    return FetchResult(
        name=name,
        path=str(output),
        size=size,
        sha256=sha256,
        owners=[o.peer_id for o in used],
        failed_owners=sorted(failed),
        bytes_fetched=fetched,
        resumed_bytes=resumed,
        seconds=time.perf_counter() - started,
        owner_paths={o.peer_id: o.path for o in used},
    )
