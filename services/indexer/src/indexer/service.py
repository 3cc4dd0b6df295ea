"""The indexer loop: full scans, the file watcher, the heartbeat and the safety-net rescan.

    stop = asyncio.Event()
    await run(settings, stop)       # returns once `stop` is set and the writer is closed

One `Indexer` owns the peer's `IndexWriter`. Its tasks:

- watcher: `watchfiles.awatch` (inotify) over the shared folder; each batch of
  changes is reconciled path by path against what is on disk now (a set of
  changes carries no order, so the current state decides): a file is upserted,
  a directory (a tree moved in) is walked and its files upserted, anything gone
  or no longer indexable is removed, with everything under it;
- rescans: a full scan at start and every `rescan_interval_s` (or at once when
  the watcher had to be restarted), written with `replace_all` in one transaction;
- a corrupt index (not a database, or failing `quick_check` at start; any write
  that SQLite answers with SQLITE_CORRUPT / SQLITE_NOTADB later) is moved aside to
  `<name>.corrupt-<UTC time>` with its WAL files, logged in one line, counted in
  `peerfind_indexer_index_rebuilds_total`, and rebuilt from a full scan: the index
  is a cache of the shared folder, so nothing is lost but the hashes;
- heartbeat: `IndexWriter.heartbeat()` every `heartbeat_interval(settings)` seconds,
  so readers and `peerfind-indexer --check` can tell a live index from a stale one;
- hashes: after the first full scan (so a big share is searchable first), the
  files with no SHA-256 are hashed in a thread within `hash_rate_mib_s`
  (`indexer.hasher`), and the digests stored in batches; woken again whenever a
  scan or a batch added or changed a file. Hashing takes no write lock: a digest is
  stored only where the row still has the size, mtime and inode that were read.

Writes are serialized by one asyncio lock, so a full scan and a watcher batch
never interleave: a batch that arrives during a scan waits (the watcher keeps
collecting events meanwhile) and is applied after it, against the disk as it is
then. The watcher is started before the first scan, so nothing created while
that scan runs is missed. Walking and SQLite work run in threads, keeping the
event loop free for the watcher and the heartbeat. A watcher failure is logged,
the periodic rescan carries on, and the watcher is restarted with backoff. When
the shared folder itself is deleted, moved or replaced (inotify watches die with
it, silently), the watcher notices within `ROOT_CHECK_S`, waits for a folder to be
there again, arms a new watcher on it and asks for a full scan.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from watchfiles import Change, awatch

from indexer import metrics
from indexer.hasher import HashCancelled, Hasher
from indexer.scanner import Directory, ScanCancelled, Scanner, Skipped, SkipReason
from peerfind.config import PeerSettings
from peerfind.errors import ConfigError, IndexCorrupt, IndexUnavailable
from peerfind.index import (
    FileEntry,
    IndexReader,
    IndexWriter,
    SyncStats,
    is_corruption,
    move_aside,
)

__all__ = [
    "SHUTDOWN_GRACE_S",
    "BatchStats",
    "Indexer",
    "heartbeat_interval",
    "run",
    "shared_root",
]

logger = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 5.0
"""How long shutdown waits for running work (a scan, a batch) before cancelling it."""

WATCH_DEBOUNCE_MS = 50
WATCH_STEP_MS = 50
_RESTART_MIN_S = 1.0
ROOT_CHECK_S = 1.0
"""How often the watcher checks that the shared folder is still the one it watches."""
_RESTART_MAX_S = 60.0
_MAX_SKIP_WARNINGS = 50  # per scan or batch; the rest are summed up in one line
_HASH_BATCH_FILES = 256  # rows read per query, digests stored per transaction at most
_HASH_BATCH_BYTES = 256 * 1024 * 1024  # ... or fewer, once this much was read


def heartbeat_interval(settings: PeerSettings) -> float:
    """Seconds between heartbeats: a third of the staleness limit, within [0.5, 2]."""
    return max(0.5, min(2.0, settings.index_stale_after_s / 3))


def shared_root(settings: PeerSettings) -> Path:
    """The shared folder, or ConfigError naming the field if it is not a directory."""
    path = settings.shared_dir
    if not path.exists():
        raise ConfigError(f"shared_dir: {path} does not exist")
    if not path.is_dir():
        raise ConfigError(f"shared_dir: {path} is not a directory")
    return path


@dataclass(frozen=True, slots=True)
class BatchStats:
    """What one batch of watcher changes did to the index."""

    upserted: int
    removed: int
    skipped: int


async def _wait(event: asyncio.Event, seconds: float) -> bool:
    """Wait for `event` at most `seconds`; True if it was set."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True


class _Either:
    """Set when either event is (the stop event `awatch` polls; it may set it too)."""

    def __init__(self, first: asyncio.Event, second: asyncio.Event) -> None:
        self._events = (first, second)
        self._set = False

    def is_set(self) -> bool:
        return self._set or any(event.is_set() for event in self._events)

    def set(self) -> None:
        self._set = True


def _file_id(path: str) -> tuple[int, int] | None:
    """(device, inode) of the directory at `path`, or None if there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


def _outermost(paths: Iterable[str]) -> list[str]:
    """`paths` without those under another of them (remove() takes the subtree too)."""
    unique = set(paths)
    kept = []
    for path in sorted(unique):
        head = path
        while "/" in head:
            head = head.rpartition("/")[0]
            if head in unique:
                break
        else:
            kept.append(path)
    return kept


class Indexer:
    """The single writer of one peer's index: scans, watches and heartbeats."""

    def __init__(self, settings: PeerSettings) -> None:
        self.settings = settings
        self.scanner = Scanner(shared_root(settings))
        # Set when a write found the index damaged: the next full scan rebuilds it.
        self._corrupt: BaseException | None = None
        try:
            self.writer = IndexWriter(settings.index_path, verify=True)
        except IndexCorrupt as exc:
            self.writer = self._rebuild(exc)
        except (OSError, sqlite3.Error) as exc:
            raise IndexUnavailable(f"cannot open index {settings.index_path}: {exc}") from None
        self.reader = IndexReader(settings.index_path)
        self._write_lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._rescan_requested = asyncio.Event()
        self._warned: set[tuple[str, SkipReason]] = set()
        self._scanned = asyncio.Event()  # the first full scan is done
        self._hash_wake = asyncio.Event()
        self.hasher = Hasher(
            self.scanner.root,
            settings.hash_rate_mib_s * 1024 * 1024,
            cancelled=self._stopping.is_set,
        )

    def close(self) -> None:
        """Close the writer (waits for a write in progress)."""
        self.writer.close()

    def _rebuild(self, cause: BaseException) -> IndexWriter:
        """Move the damaged index aside and open an empty one (the caller fills it
        from a full scan). Readers see no index, then the new one: a partial answer
        meanwhile, never an error page for good."""
        path = self.settings.index_path
        try:
            moved = move_aside(path)
            writer = IndexWriter(path)
        except (OSError, sqlite3.Error) as exc:
            raise IndexUnavailable(f"cannot rebuild corrupt index {path}: {exc}") from None
        metrics.INDEX_REBUILDS.inc()
        logger.error(
            "index %s is corrupt (%s); moved it to %s, rebuilding it from a full scan",
            path,
            str(cause).removeprefix(f"index {path} is corrupt: "),
            moved.name,
        )
        return writer

    def _note_corruption(self, exc: BaseException) -> bool:
        """True (and a rebuild at the next full scan, asked for now) if `exc` says the
        index file is damaged."""
        if not is_corruption(exc):
            return False
        self._corrupt = exc
        self._rescan_requested.set()
        return True

    # Blocking work, run in a thread by the tasks below (and called directly by tests).

    def full_scan(self) -> SyncStats | None:
        """Walk the whole shared folder and make the index hold exactly that.

        Returns None if the scan failed (logged and counted) or was cancelled.
        """
        started = time.perf_counter()
        try:
            result = self.scanner.scan(cancelled=self._stopping.is_set)
            try:
                if self._corrupt is not None:
                    raise self._corrupt
                synced = self.writer.replace_all(result.entries)
            except sqlite3.DatabaseError as exc:
                if not is_corruption(exc):
                    raise
                self._corrupt = None
                with contextlib.suppress(sqlite3.Error):
                    self.writer.close()
                self.writer = self._rebuild(exc)
                synced = self.writer.replace_all(result.entries)
        except ScanCancelled:
            logger.info("full scan cancelled: shutting down")
            return None
        except (OSError, sqlite3.Error, IndexUnavailable) as exc:
            metrics.SCANS.labels(result="error").inc()
            logger.error("full scan of %s failed: %s", self.scanner.root, exc)
            return None
        elapsed = time.perf_counter() - started
        metrics.SCAN_DURATION.observe(elapsed)
        metrics.SCANS.labels(result="ok").inc()
        metrics.LAST_SCAN_TIMESTAMP.set(time.time())
        self._report_skips(result.skipped, full=True)
        self._refresh_totals()
        logger.info(
            "full scan: %d files indexed (%d added, %d updated, %d removed), %d skipped, %.2f s",
            synced.files,
            synced.added,
            synced.updated,
            synced.removed,
            len(result.skipped),
            elapsed,
        )
        return synced

    def apply_changes(self, changes: Iterable[tuple[Change, str]]) -> BatchStats:
        """Bring the index in line with the disk for every path in a watcher batch."""
        paths: set[str] = set()
        deleted: set[str] = set()
        for change, path in changes:
            metrics.WATCH_EVENTS.labels(kind=change.name).inc()
            paths.add(path)
            if change == Change.deleted:
                deleted.add(path)
        upserts: dict[str, FileEntry] = {}
        removes: list[str] = []
        skipped: list[Skipped] = []
        for path in sorted(paths):
            found = self.scanner.probe(path)
            if isinstance(found, FileEntry):
                upserts[found.path] = found
            elif isinstance(found, Directory):
                if path in deleted:
                    removes.append(found.path)  # replaced by another tree: drop the old one
                subtree = self.scanner.scan(found.path)
                upserts.update((entry.path, entry) for entry in subtree.entries)
                skipped.extend(subtree.skipped)
            else:
                rel = self.scanner.relative(path)
                if rel:
                    removes.append(rel)  # gone, or no longer indexable
                if found is not None:
                    skipped.append(found)
        removed = self.writer.remove(_outermost(removes)) if removes else 0
        upserted = self.writer.upsert(upserts.values())
        self._report_skips(skipped, full=False)
        self._refresh_totals()
        logger.debug(
            "applied %d paths: %d upserted, %d removed, %d skipped",
            len(paths),
            upserted,
            removed,
            len(skipped),
        )
        return BatchStats(upserted=upserted, removed=removed, skipped=len(skipped))

    def hash_pending(self, after_id: int = 0) -> tuple[int, int]:
        """Hash one batch of unhashed files with row id > `after_id`; store the digests.

        Returns (files in the batch, last row id seen); (0, after_id) when none is left.
        Raises HashCancelled when the service stops.
        """
        pending = self.reader.unhashed(_HASH_BATCH_FILES, after_id)
        done: list[FileEntry] = []
        last = after_id
        read = 0
        for row_id, entry in pending:
            last = row_id
            hashed = self.hasher.hash_entry(entry)
            if hashed is None:
                metrics.HASH_FAILURES.inc()
                logger.debug("not hashed (changed, gone or refused): %s", entry.path)
            else:
                done.append(hashed)
                metrics.HASHED_BYTES.inc(entry.size)
            read += entry.size
            if read >= _HASH_BATCH_BYTES:
                break
        stored = self.writer.set_hashes(done)
        metrics.HASHED_FILES.inc(stored)
        return len(pending), last

    def _refresh_totals(self) -> None:
        try:
            stats = self.reader.stats()
        except IndexUnavailable as exc:
            logger.warning("cannot read index totals: %s", exc)
            return
        if stats.available:
            metrics.INDEXED_FILES.set(stats.files)
            metrics.INDEXED_BYTES.set(stats.bytes)

    def _report_skips(self, skipped: list[Skipped], *, full: bool) -> None:
        """Count every skip; log each (path, reason) once while it persists.

        A full scan forgets the skips it no longer sees, so a path that is fixed
        and breaks again is logged again.
        """
        seen: set[tuple[str, SkipReason]] = set()
        logged = 0
        for item in skipped:
            metrics.SKIPPED.labels(reason=item.reason.value).inc()
            key = (item.path, item.reason)
            if key in seen:
                continue
            seen.add(key)
            if key in self._warned:
                continue
            logged += 1
            if logged <= _MAX_SKIP_WARNINGS:
                logger.warning("skipped %s: %s (%s)", item.path, item.reason.value, item.detail)
        if logged > _MAX_SKIP_WARNINGS:
            logger.warning(
                "skipped %d more entries, not logged one by one", logged - _MAX_SKIP_WARNINGS
            )
        self._warned = seen if full else self._warned | seen

    # The event-loop side.

    async def run(self, stop: asyncio.Event) -> None:
        """Scan, watch and heartbeat until `stop` is set; then stop every task."""
        logger.info("indexing %s into %s", self.scanner.root, self.settings.index_path)
        watcher = asyncio.create_task(self._watch(), name="indexer-watch")
        # The watcher's first step sets up its inotify watches before it yields,
        # so letting it run once here means the first scan cannot miss a change.
        await asyncio.sleep(0)
        tasks = [
            watcher,
            asyncio.create_task(self._heartbeats(), name="indexer-heartbeat"),
            asyncio.create_task(self._rescans(), name="indexer-rescan"),
            asyncio.create_task(self._hashes(), name="indexer-hash"),
        ]
        try:
            await stop.wait()
        finally:
            logger.info("stopping")
            self._stopping.set()
            self._rescan_requested.set()
            self._hash_wake.set()
            _, pending = await asyncio.wait(tasks, timeout=SHUTDOWN_GRACE_S)
            for task in pending:
                logger.warning("task %s did not stop in time; cancelling it", task.get_name())
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def rescan(self) -> SyncStats | None:
        """Run one full scan now (after any batch being applied)."""
        async with self._write_lock:
            if self._stopping.is_set():
                return None
            synced = await asyncio.to_thread(self.full_scan)
        if synced is not None:
            self._scanned.set()
            if synced.added or synced.updated:
                self._hash_wake.set()
        return synced

    async def _apply(self, changes: set[tuple[Change, str]]) -> None:
        async with self._write_lock:
            if self._stopping.is_set():
                return
            try:
                batch = await asyncio.to_thread(self.apply_changes, changes)
                if batch.upserted:
                    self._hash_wake.set()
            except Exception as exc:
                if self._note_corruption(exc):
                    return  # the rescan rebuilds the index, these changes included
                logger.exception("applying %d changes failed; rescanning", len(changes))
                self._rescan_requested.set()

    async def _watch(self) -> None:
        backoff = _RESTART_MIN_S
        restarting = False
        root = self.scanner.root
        gone = False
        while not self._stopping.is_set():
            armed_on = _file_id(root)
            if armed_on is None:
                # inotify watches die with the folder; nothing would ever be reported
                # again. Wait for it to come back, then arm a new watcher on it.
                if not gone:
                    logger.warning("shared folder %s is gone; watching for it to come back", root)
                    gone = True
                await _wait(self._stopping, ROOT_CHECK_S)
                restarting = True
                continue
            if gone:
                logger.info("shared folder %s is back; watching it again", root)
                gone = False
            if restarting:
                # Changes made while no watcher ran are only found by a scan. Asked
                # for here, it starts after the new watcher has set up its watches.
                self._rescan_requested.set()
            rearm = asyncio.Event()  # the folder was removed or replaced
            monitor = asyncio.create_task(self._watch_root(armed_on, rearm))
            try:
                async for changes in awatch(
                    root,
                    watch_filter=None,  # index what a full scan indexes (.git, *~, ...)
                    recursive=True,
                    debounce=WATCH_DEBOUNCE_MS,
                    step=WATCH_STEP_MS,
                    force_polling=False,
                    ignore_permission_denied=True,  # an unreadable subfolder is a skip
                    stop_event=_Either(self._stopping, rearm),
                ):
                    backoff = _RESTART_MIN_S
                    await self._apply(changes)
                    if (Change.deleted, root) in changes:
                        rearm.set()
            except Exception:
                logger.exception(
                    "file watcher failed; periodic rescans go on; restarting it in %.0f s",
                    backoff,
                )
            else:
                if self._stopping.is_set():
                    break
                if rearm.is_set():  # the folder went away or was replaced: no backoff
                    restarting = True
                    continue
                logger.warning("file watcher ended; restarting it in %.0f s", backoff)
            finally:
                monitor.cancel()
                await asyncio.gather(monitor, return_exceptions=True)
            restarting = True
            await _wait(self._stopping, backoff)
            backoff = min(backoff * 2, _RESTART_MAX_S)

    async def _watch_root(self, armed_on: tuple[int, int], rearm: asyncio.Event) -> None:
        """Set `rearm` once the shared folder is no longer the directory the watcher was
        armed on (deleted, moved away, or replaced by another)."""
        while not await _wait(self._stopping, ROOT_CHECK_S):
            if _file_id(self.scanner.root) != armed_on:
                rearm.set()
                return

    async def _heartbeats(self) -> None:
        interval = heartbeat_interval(self.settings)
        while not self._stopping.is_set():
            try:
                await asyncio.to_thread(self.writer.heartbeat)
            except sqlite3.Error as exc:
                if not self._note_corruption(exc):
                    logger.error("index heartbeat failed: %s", exc)
            await _wait(self._stopping, interval)

    async def _hashes(self) -> None:
        await self._scanned.wait()  # hashing never delays the first scan
        self._hash_wake.set()
        while not self._stopping.is_set():
            await self._hash_wake.wait()
            self._hash_wake.clear()
            cursor = 0
            try:
                while not self._stopping.is_set():
                    count, cursor = await asyncio.to_thread(self.hash_pending, cursor)
                    if count == 0:
                        break
            except HashCancelled:
                return
            except (IndexUnavailable, sqlite3.Error) as exc:
                self._note_corruption(exc)
                logger.error("hashing stopped for now: %s", exc)
                await _wait(self._stopping, _RESTART_MIN_S)
                self._hash_wake.set()

    async def _rescans(self) -> None:
        while not self._stopping.is_set():
            self._rescan_requested.clear()
            try:
                await self.rescan()
            except Exception:
                metrics.SCANS.labels(result="error").inc()
                logger.exception("full scan failed")
            await _wait(self._rescan_requested, self.settings.rescan_interval_s)


async def run(settings: PeerSettings, stop: asyncio.Event) -> None:
    """Index `settings.shared_dir` until `stop` is set, then close the index writer.

    Raises ConfigError if the shared folder is not a directory, IndexUnavailable
    if the index database cannot be opened.
    """
    indexer = Indexer(settings)
    try:
        await indexer.run(stop)
    finally:
        indexer.close()
        logger.info("stopped")
