"""The background hasher: digests, the budget, reuse while unchanged, recompute on change."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from indexer.hasher import Budget, Hasher
from indexer.service import run
from peerfind.config import PeerSettings
from peerfind.index import FileEntry, IndexReader, IndexWriter

Eventually = Callable[..., Awaitable[Any]]


def entry_of(root: Path, rel: str) -> FileEntry:
    st = os.stat(root / rel)
    return FileEntry(rel, rel.rpartition("/")[2], st.st_size, st.st_mtime, st.st_ino)


def test_hash_entry_matches_hashlib(shared: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    (shared / "big.bin").write_bytes(data)
    hashed = Hasher(str(shared)).hash_entry(entry_of(shared, "big.bin"))
    assert hashed is not None
    assert hashed.sha256 == hashlib.sha256(data).hexdigest()


def test_hash_entry_refuses_a_stale_entry(shared: Path) -> None:
    (shared / "a.txt").write_bytes(b"one")
    stale = entry_of(shared, "a.txt")._replace(size=99)
    assert Hasher(str(shared)).hash_entry(stale) is None


def test_hash_entry_refuses_what_open_shared_refuses(shared: Path, tmp_path: Path) -> None:
    (tmp_path / "outside.txt").write_bytes(b"secret")
    os.symlink(tmp_path / "outside.txt", shared / "link.txt")
    os.mkfifo(shared / "pipe")
    hasher = Hasher(str(shared))
    assert hasher.hash_entry(FileEntry("link.txt", "link.txt", 6, 0.0)) is None
    assert hasher.hash_entry(FileEntry("pipe", "pipe", 0, 0.0)) is None


def test_budget_sleeps_when_ahead_of_the_rate() -> None:
    now = [0.0]
    slept: list[float] = []
    budget = Budget(100.0, clock=lambda: now[0], sleep=slept.append)
    budget.take(50)
    assert slept == [0.5]
    unlimited = Budget(0.0, clock=lambda: now[0], sleep=slept.append)
    unlimited.take(10**9)
    assert slept == [0.5]


def test_set_hashes_only_where_the_row_is_unchanged(tmp_path: Path) -> None:
    writer = IndexWriter(tmp_path / "index.sqlite3")
    reader = IndexReader(tmp_path / "index.sqlite3")
    entry = FileEntry("a.txt", "a.txt", 3, 1.0, 7)
    writer.replace_all([entry])
    # The file changed (new inode, same size and mtime) before the digest arrived.
    writer.upsert([entry._replace(ino=8)])
    assert writer.set_hashes([entry._replace(sha256="ab" * 32)]) == 0
    assert writer.set_hashes([entry._replace(ino=8, sha256="cd" * 32)]) == 1
    assert reader.lookup("a.txt") == entry._replace(ino=8, sha256="cd" * 32)
    # Reused while size, mtime and inode hold; dropped when one changes.
    writer.replace_all([entry._replace(ino=8)])
    assert reader.lookup("a.txt").sha256 == "cd" * 32  # type: ignore[union-attr]
    writer.replace_all([entry._replace(ino=8, mtime=2.0)])
    assert reader.lookup("a.txt").sha256 is None  # type: ignore[union-attr]
    writer.close()


async def test_the_service_hashes_and_rehashes_a_changed_file(
    make_settings: Callable[..., PeerSettings], shared: Path, eventually: Eventually
) -> None:
    (shared / "docs").mkdir()
    (shared / "docs" / "a.txt").write_bytes(b"first version")
    settings = make_settings()
    stop = asyncio.Event()
    task = asyncio.create_task(run(settings, stop))
    reader = IndexReader(settings.index_path)

    def digest() -> str | None:
        found = reader.lookup("a.txt")
        return None if found is None else found.sha256

    try:
        first = hashlib.sha256(b"first version").hexdigest()
        await eventually(lambda: digest() == first, what="first digest")
        (shared / "docs" / "a.txt").write_bytes(b"second, longer version")
        second = hashlib.sha256(b"second, longer version").hexdigest()
        await eventually(lambda: digest() == second, what="digest after the change")
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)
