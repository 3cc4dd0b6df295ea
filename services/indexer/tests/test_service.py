"""In-process tests of the indexer service: run(settings, stop) on a temporary shared folder."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from watchfiles import Change

from indexer import service
from indexer.service import Indexer, _outermost, heartbeat_interval, run
from peerfind.config import PeerSettings
from peerfind.errors import ConfigError
from peerfind.index import FileEntry, IndexReader, IndexWriter

Eventually = Callable[..., Awaitable[Any]]


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def names(reader: IndexReader, query: str) -> set[str]:
    return {e.path for e in reader.search(query, 1000)}


@dataclass
class Running:
    settings: PeerSettings
    reader: IndexReader
    stop: asyncio.Event
    task: asyncio.Task[None]


@pytest.fixture
async def running(
    make_settings: Callable[..., PeerSettings], shared: Path, eventually: Eventually
) -> AsyncIterator[Running]:
    """The service on `shared` with its initial scan done; stopped (and checked) after."""
    (shared / "docs").mkdir()
    (shared / "docs" / "initial-report.txt").write_bytes(b"12345")
    (shared / "initial-top.bin").write_bytes(b"1")
    settings = make_settings()
    stop = asyncio.Event()
    task = asyncio.create_task(run(settings, stop))
    reader = IndexReader(settings.index_path)
    try:
        await eventually(lambda: reader.stats().last_scan_at > 0, what="initial scan")
        yield Running(settings, reader, stop, task)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)


async def test_initial_scan_then_watched_changes(
    running: Running, shared: Path, tmp_path: Path, eventually: Eventually
) -> None:
    reader = running.reader
    assert names(reader, "initial") == {"docs/initial-report.txt", "initial-top.bin"}
    found = reader.lookup("initial-report.txt")
    st = (shared / "docs" / "initial-report.txt").stat()
    assert found is not None
    assert found[:5] == ("docs/initial-report.txt", "initial-report.txt", 5, st.st_mtime, st.st_ino)
    first_scan = reader.stats().last_scan_at

    created = shared / "docs" / "created-later.txt"
    created.write_bytes(b"abc")
    await eventually(lambda: names(reader, "created-later") == {"docs/created-later.txt"})

    with created.open("ab") as f:
        f.write(b"defgh")
    await eventually(lambda: [e.size for e in reader.search("created-later", 10)] == [8])

    created.unlink()
    await eventually(lambda: not reader.search("created-later", 10))

    staging = tmp_path / "staging"
    (staging / "album" / "cd1").mkdir(parents=True)
    (staging / "album" / "cd1" / "track-one.flac").write_bytes(b"t1")
    (staging / "album" / "cover-art.jpg").write_bytes(b"jpg")
    os.rename(staging / "album", shared / "album")
    await eventually(
        lambda: (
            names(reader, "track-one") | names(reader, "cover-art")
            == {"album/cd1/track-one.flac", "album/cover-art.jpg"}
        ),
        what="moved-in tree indexed",
    )

    shutil.rmtree(shared / "album")
    await eventually(lambda: not reader.search("track-one", 10) and not reader.search("cover", 10))

    # All of that came from the watcher: no full scan ran since the first one.
    assert reader.stats().last_scan_at == first_scan
    assert names(reader, "initial") == {"docs/initial-report.txt", "initial-top.bin"}


async def test_renames_and_symlink_rules_apply_to_watched_changes(
    running: Running, shared: Path, tmp_path: Path, eventually: Eventually
) -> None:
    reader = running.reader
    outside_before = sample("peerfind_indexer_skipped_total", reason="symlink_outside")
    secret = tmp_path / "secret-outside.txt"
    secret.write_bytes(b"s")

    (shared / "link-out.txt").symlink_to(secret)
    (shared / "link-in.txt").symlink_to(shared / "initial-top.bin")
    os.rename(shared / "docs", shared / "papers")

    await eventually(lambda: names(reader, "link-in") == {"link-in.txt"})
    await eventually(lambda: names(reader, "initial-report") == {"papers/initial-report.txt"})
    await eventually(
        lambda: sample("peerfind_indexer_skipped_total", reason="symlink_outside") > outside_before
    )
    assert not reader.search("link-out", 10)


async def test_heartbeat_advances_and_stop_returns(
    running: Running, eventually: Eventually
) -> None:
    first = await eventually(lambda: running.reader.stats().heartbeat_at)
    await eventually(lambda: running.reader.stats().heartbeat_at > first, what="next heartbeat")

    running.stop.set()
    await asyncio.wait_for(asyncio.shield(running.task), timeout=5)
    assert running.task.result() is None
    # Stopped means stopped: the writer is closed and no heartbeat follows.
    last = running.reader.stats().heartbeat_at
    await asyncio.sleep(heartbeat_interval(running.settings) * 2)
    assert running.reader.stats().heartbeat_at == last


async def test_metrics_follow_the_index(
    running: Running, shared: Path, eventually: Eventually
) -> None:
    # The gauges are set right after the scan's write, which the fixture waited for.
    await eventually(lambda: sample("peerfind_indexer_files") == 2)
    assert sample("peerfind_indexer_bytes") == 6
    assert sample("peerfind_indexer_last_scan_timestamp_seconds") > 0
    assert sample("peerfind_indexer_scan_duration_seconds_count") >= 1
    added = sample("peerfind_indexer_watch_events_total", kind="added")

    (shared / "more.dat").write_bytes(b"x" * 100)

    await eventually(lambda: sample("peerfind_indexer_files") == 3)
    assert sample("peerfind_indexer_bytes") == 106
    assert sample("peerfind_indexer_watch_events_total", kind="added") > added


async def test_watcher_failure_falls_back_to_rescans_and_restarts(
    make_settings: Callable[..., PeerSettings],
    shared: Path,
    eventually: Eventually,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    starts: list[float] = []

    def broken_awatch(*args: object, **kwargs: object) -> Any:
        starts.append(asyncio.get_running_loop().time())
        raise OSError(28, "inotify watch limit reached")

    monkeypatch.setattr(service, "awatch", broken_awatch)
    monkeypatch.setattr(service, "_RESTART_MIN_S", 0.05)
    scans_ok = sample("peerfind_indexer_scans_total", result="ok")
    settings = make_settings(rescan_interval_s=0.2)
    stop = asyncio.Event()
    task = asyncio.create_task(run(settings, stop))
    reader = IndexReader(settings.index_path)
    try:
        (shared / "found-by-rescan.txt").write_bytes(b"r")
        await eventually(lambda: reader.search("found-by-rescan", 10))
        await eventually(lambda: len(starts) >= 3, what="watcher restarted")
        await eventually(
            lambda: sample("peerfind_indexer_scans_total", result="ok") >= scans_ok + 2,
            what="periodic rescans",
        )
        assert not task.done()
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)


async def test_missing_shared_dir_is_a_config_error(
    make_settings: Callable[..., PeerSettings], tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="shared_dir"):
        await run(make_settings(shared_dir=tmp_path / "nope"), asyncio.Event())
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(ConfigError, match="not a directory"):
        await run(make_settings(shared_dir=tmp_path / "file"), asyncio.Event())


def test_apply_changes_reconciles_against_the_disk(
    make_settings: Callable[..., PeerSettings], shared: Path
) -> None:
    settings = make_settings()
    (shared / "tree" / "old").mkdir(parents=True)
    (shared / "tree" / "old" / "stale.txt").write_bytes(b"s")
    (shared / "keep.txt").write_bytes(b"k")
    indexer = Indexer(settings)
    reader = IndexReader(settings.index_path)
    try:
        assert indexer.full_scan() is not None
        assert names(reader, ".txt") == {"tree/old/stale.txt", "keep.txt"}

        # "tree" is replaced by another tree (deleted + added in one batch).
        shutil.rmtree(shared / "tree")
        (shared / "tree").mkdir()
        (shared / "tree" / "fresh.txt").write_bytes(b"fresh")
        os.mkfifo(shared / "fifo")
        stats = indexer.apply_changes(
            {
                (Change.deleted, str(shared / "tree" / "old" / "stale.txt")),
                (Change.deleted, str(shared / "tree")),
                (Change.added, str(shared / "tree")),
                (Change.added, str(shared / "fifo")),
                (Change.modified, str(shared / "keep.txt")),
                (Change.deleted, str(shared / "never-indexed.txt")),
                (Change.modified, str(shared)),
            }
        )
        assert names(reader, ".txt") == {"tree/fresh.txt", "keep.txt"}
        assert stats.upserted == 2
        assert stats.removed == 1
        assert stats.skipped == 1  # the fifo
    finally:
        indexer.close()


def test_full_scan_failure_is_counted_and_keeps_the_index(
    make_settings: Callable[..., PeerSettings], shared: Path, tmp_path: Path
) -> None:
    (shared / "kept.txt").write_bytes(b"k")
    settings = make_settings()
    indexer = Indexer(settings)
    reader = IndexReader(settings.index_path)
    errors = sample("peerfind_indexer_scans_total", result="error")
    try:
        assert indexer.full_scan() is not None
        shared.rename(tmp_path / "moved-away")
        assert indexer.full_scan() is None
        assert sample("peerfind_indexer_scans_total", result="error") == errors + 1
        assert names(reader, "kept") == {"kept.txt"}
    finally:
        indexer.close()


def test_skips_are_counted_each_time_and_logged_once(
    make_settings: Callable[..., PeerSettings],
    shared: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    (shared / "dangling").symlink_to(shared / "nowhere")
    indexer = Indexer(make_settings())
    before = sample("peerfind_indexer_skipped_total", reason="dangling_symlink")
    try:
        with caplog.at_level("WARNING", logger="indexer.service"):
            indexer.full_scan()
            indexer.full_scan()
        assert sample("peerfind_indexer_skipped_total", reason="dangling_symlink") == before + 2
        warnings = [r.getMessage() for r in caplog.records if "dangling" in r.getMessage()]
        detail = f"target {shared / 'nowhere'}: {os.strerror(2)}"
        assert warnings == [f"skipped dangling: dangling_symlink ({detail})"]
    finally:
        indexer.close()


def test_outermost_drops_paths_under_another() -> None:
    assert _outermost(["a/b", "a", "a b", "a/b/c", "c/d", "a-b/x"]) == ["a", "a b", "a-b/x", "c/d"]


def test_heartbeat_interval_is_a_third_of_staleness_within_bounds(
    make_settings: Callable[..., PeerSettings],
) -> None:
    assert heartbeat_interval(make_settings(index_stale_after_s=3.0)) == 1.0
    assert heartbeat_interval(make_settings(index_stale_after_s=0.3)) == 0.5
    assert heartbeat_interval(make_settings(index_stale_after_s=60.0)) == 2.0


def test_index_writer_is_released_after_close(
    make_settings: Callable[..., PeerSettings],
) -> None:
    settings = make_settings()
    Indexer(settings).close()
    # The database is usable by the next writer (a restarted indexer).
    writer = IndexWriter(settings.index_path)
    writer.heartbeat()
    writer.close()


def _torn(path: Path) -> None:
    """Damage a closed, checkpointed index the way a torn write does: the header page
    is kept, every page after it is overwritten."""
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.seek(4096)
        f.write(b"\xa5" * (size - 4096))


def _garbage(path: Path) -> None:
    """Replace the index with a file that is no database at all."""
    path.write_bytes(b"this is not an SQLite database\n" * 256)


def _corrupt_copies(settings: PeerSettings) -> list[Path]:
    found = settings.index_path.parent.glob(settings.index_path.name + ".corrupt-*")
    return sorted(p for p in found if not p.name.endswith(("-wal", "-shm")))


@pytest.mark.parametrize("damage", [_garbage, _torn])
async def test_a_corrupt_index_at_start_is_moved_aside_and_rebuilt(
    make_settings: Callable[..., PeerSettings],
    shared: Path,
    eventually: Eventually,
    caplog: pytest.LogCaptureFixture,
    damage: Callable[[Path], None],
) -> None:
    """Issue 17, item 13: 'file is not a database' made the indexer exit 1 for good."""
    settings = make_settings()
    writer = IndexWriter(settings.index_path)
    writer.replace_all(FileEntry(f"old/{i}.txt", f"{i}.txt", 1, 1.0) for i in range(3000))
    writer.close()  # the last connection checkpoints the WAL into the file
    damage(settings.index_path)
    broken = settings.index_path.read_bytes()
    (shared / "after-rebuild.txt").write_bytes(b"x")
    rebuilds = sample("peerfind_indexer_index_rebuilds_total")
    stop = asyncio.Event()
    with caplog.at_level("ERROR", logger="indexer.service"):
        task = asyncio.create_task(run(settings, stop))
        reader = IndexReader(settings.index_path)
        try:
            await eventually(lambda: names(reader, "after-rebuild") == {"after-rebuild.txt"})
            assert names(reader, ".txt") == {"after-rebuild.txt"}
            assert not task.done()
        finally:
            stop.set()
            await asyncio.wait_for(task, timeout=10)
    (copy,) = _corrupt_copies(settings)
    assert copy.read_bytes() == broken  # kept as it was, for inspection
    assert sample("peerfind_indexer_index_rebuilds_total") == rebuilds + 1
    lines = [r.getMessage() for r in caplog.records if "corrupt" in r.getMessage()]
    assert len(lines) == 1
    assert lines[0].startswith(f"index {settings.index_path} is corrupt (")
    assert lines[0].endswith(f"moved it to {copy.name}, rebuilding it from a full scan")


def test_a_write_that_finds_the_index_corrupt_rebuilds_it_from_the_scan(
    make_settings: Callable[..., PeerSettings],
    shared: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Mid-run: SQLite reports damage only when it reads a damaged page, which a warm
    page cache may delay; the error it then raises is what the indexer acts on."""
    (shared / "one.txt").write_bytes(b"1")
    settings = make_settings()
    indexer = Indexer(settings)
    reader = IndexReader(settings.index_path)  # a directory's reader, open on the old file
    try:
        assert indexer.full_scan() is not None
        assert names(reader, "one") == {"one.txt"}
        garbage = settings.index_path.with_name("garbage")
        _garbage(garbage)
        with pytest.raises(sqlite3.DatabaseError) as real:  # the error SQLite gives
            sqlite3.connect(garbage).execute("PRAGMA user_version")

        def damaged(entries: object) -> None:
            raise real.value

        monkeypatch.setattr(indexer.writer, "replace_all", damaged)
        (shared / "two.txt").write_bytes(b"2")
        synced = indexer.full_scan()
        assert synced is not None and synced.files == 2
        assert len(_corrupt_copies(settings)) == 1
        assert names(reader, ".txt") == {"one.txt", "two.txt"}  # follows the new file
    finally:
        indexer.close()


async def test_a_corrupt_write_from_the_watcher_asks_for_a_rebuild(
    make_settings: Callable[..., PeerSettings],
    shared: Path,
    eventually: Eventually,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = make_settings()
    stop = asyncio.Event()
    indexers: list[Indexer] = []
    real_init = Indexer.__init__

    def keep(self: Indexer, settings: PeerSettings) -> None:
        real_init(self, settings)
        indexers.append(self)

    monkeypatch.setattr(Indexer, "__init__", keep)
    task = asyncio.create_task(run(settings, stop))
    reader = IndexReader(settings.index_path)
    try:
        await eventually(lambda: reader.stats().last_scan_at > 0, what="initial scan")
        (indexer,) = indexers
        garbage = settings.index_path.with_name("garbage")
        _garbage(garbage)
        with pytest.raises(sqlite3.DatabaseError) as real:
            sqlite3.connect(garbage).execute("PRAGMA user_version")

        def damaged(entries: object) -> int:
            raise real.value

        monkeypatch.setattr(indexer.writer, "upsert", damaged)
        (shared / "watched.txt").write_bytes(b"w")
        await eventually(lambda: names(reader, "watched") == {"watched.txt"})
        assert len(_corrupt_copies(settings)) == 1
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)


@pytest.mark.parametrize("how", ["deleted", "replaced"])
async def test_watcher_rearms_when_the_shared_folder_is_deleted_and_recreated(
    running: Running,
    shared: Path,
    tmp_path: Path,
    eventually: Eventually,
    caplog: pytest.LogCaptureFixture,
    how: str,
) -> None:
    """Issue 17, item 14: the inotify watches died with the folder and nothing was
    reported again until the periodic rescan (300 s here, so it never runs)."""
    reader = running.reader
    caplog.set_level("INFO", logger="indexer.service")
    if how == "deleted":
        shutil.rmtree(shared)
        await eventually(lambda: "is gone; watching for it" in caplog.text, what="noticed")
        os.mkdir(shared)
    else:  # another folder moved into its place, the way a restore or a sync tool does it
        (tmp_path / "new-copy").mkdir()
        shutil.rmtree(shared)
        os.rename(tmp_path / "new-copy", shared)
    (shared / "first-after.txt").write_bytes(b"1")
    await eventually(lambda: names(reader, "-after") == {"first-after.txt"})
    scans = reader.stats().last_scan_at
    # And the watcher, not a scan, sees what comes next.
    (shared / "sub").mkdir()
    (shared / "sub" / "second-after.txt").write_bytes(b"2")
    await eventually(lambda: names(reader, "-after") == {"first-after.txt", "sub/second-after.txt"})
    assert reader.stats().last_scan_at == scans
    assert names(reader, "initial") == set()  # the old folder's files are gone
