"""The peer's file index: SQLite in WAL mode, one writer (the indexer), many readers.

Schema (version 3):

    files(id, path UNIQUE, name, folded, size, mtime, ino, sha256)
                                                path: relative, '/'-separated; name: base name;
                                                folded: fold_name(name);
                                                sha256: hex digest, NULL until hashed, and
                                                set back to NULL when size, mtime or inode change
    files_fts                                   FTS5 trigram index over files.folded
    meta(key PRIMARY KEY, value)                scan and heartbeat timestamps, totals

Search is case-insensitive by one rule, `fold_name` (Unicode full case folding), applied
by Python to the stored name and to the query; SQLite only compares folded text exactly.
The trigram index answers folded queries of three or more characters and a bounded scan
(`instr`) shorter ones (a trigram index cannot answer those). SQLite's own folding is
used nowhere: LIKE folds ASCII only, and FTS5 folds simply ('ß' stays 'ß').
Every write is one transaction, so a reader (WAL snapshot isolation) sees either
the index before a rescan or the one after it, never half of one.
"""

from __future__ import annotations

import builtins
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from peerfind.errors import IndexCorrupt, IndexUnavailable, InvalidNameError

__all__ = [
    "MAX_NAME_LENGTH",
    "MAX_PATH_LENGTH",
    "SCHEMA_VERSION",
    "FileEntry",
    "IndexReader",
    "IndexStats",
    "IndexWriter",
    "SyncStats",
    "base_name",
    "fold_name",
    "is_corruption",
    "move_aside",
    "storable",
    "validate_file_name",
    "validate_shared_path",
]

SCHEMA_VERSION = 3
MAX_NAME_LENGTH = 255
"""Characters in a base name (Linux allows 255 bytes, never fewer characters)."""
MAX_PATH_LENGTH = 4096
"""Characters in a path relative to the shared folder (Linux's PATH_MAX is 4096 bytes)."""
_BUSY_TIMEOUT_S = 5.0
# How often (in SQLite VM steps) a time-bounded query looks at the clock.
_PROGRESS_STEPS = 1000
# SQLite's primary result codes for "this file is damaged" and "this is no database".
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26
# The companion files of a database in WAL mode; they belong to the file they sit next to.
_WAL_SUFFIXES = ("-wal", "-shm")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id    INTEGER PRIMARY KEY,
    path  TEXT NOT NULL UNIQUE,
    name  TEXT NOT NULL,
    folded TEXT NOT NULL,
    size  INTEGER NOT NULL,
    mtime REAL NOT NULL,
    ino    INTEGER NOT NULL DEFAULT 0,
    sha256 TEXT
);
CREATE INDEX IF NOT EXISTS files_name ON files(name);
CREATE INDEX IF NOT EXISTS files_unhashed ON files(id) WHERE sha256 IS NULL;
CREATE VIRTUAL TABLE IF NOT EXISTS files_fts USING fts5(
    folded, content='files', content_rowid='id', tokenize='trigram case_sensitive 1'
);
CREATE TRIGGER IF NOT EXISTS files_ai AFTER INSERT ON files BEGIN
    INSERT INTO files_fts(rowid, folded) VALUES (new.id, new.folded);
END;
CREATE TRIGGER IF NOT EXISTS files_ad AFTER DELETE ON files BEGIN
    INSERT INTO files_fts(files_fts, rowid, folded) VALUES ('delete', old.id, old.folded);
END;
CREATE TRIGGER IF NOT EXISTS files_au AFTER UPDATE OF folded ON files BEGIN
    INSERT INTO files_fts(files_fts, rowid, folded) VALUES ('delete', old.id, old.folded);
    INSERT INTO files_fts(rowid, folded) VALUES (new.id, new.folded);
END;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value REAL NOT NULL);
"""

_COLUMNS = "f.path, f.name, f.size, f.mtime, f.ino, f.sha256"


class FileEntry(NamedTuple):
    """One shared file as the index knows it (a scan makes one per file)."""

    path: str
    name: str
    size: int
    mtime: float
    # The inode number: a file replaced by another with the same size and mtime is
    # still a new file to hash. 0 when unknown (tests, synthetic entries).
    ino: int = 0
    # Hex SHA-256 of the content, None until the indexer's hasher has read it.
    sha256: str | None = None


@dataclass(frozen=True, slots=True)
class IndexStats:
    """Totals and timestamps (epoch seconds; 0 when never) of an index."""

    available: bool
    files: int = 0
    bytes: int = 0
    last_scan_at: float = 0.0
    last_change_at: float = 0.0
    heartbeat_at: float = 0.0


@dataclass(frozen=True, slots=True)
class SyncStats:
    """What a full rescan changed."""

    added: int
    updated: int
    removed: int
    files: int


def validate_file_name(name: str) -> str:
    """Return `name` if some file could have it as its base name; raise InvalidNameError
    otherwise (empty, '.', '..', a '/' or NUL in it, longer than MAX_NAME_LENGTH, or not
    encodable as UTF-8, which no indexed name is).

    A name is only ever looked up in the index (`WHERE name = ?`), never joined to a
    path, so anything a POSIX base name may hold is accepted: tabs, newlines, 'a..b',
    '\\'. What may be written or shown is for the caller to decide (the CLI refuses
    to name a local file after a name with control characters; every display escapes
    them).
    """
    if not name:
        raise InvalidNameError("file name is empty")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidNameError(f"file name longer than {MAX_NAME_LENGTH} characters")
    if name in (".", ".."):
        raise InvalidNameError(f"{name!r} is not a file name")
    if "/" in name or "\x00" in name:
        raise InvalidNameError("file name must not contain '/' or NUL")
    if not storable(name):
        raise InvalidNameError("file name is not valid Unicode (a lone surrogate)")
    return name


def validate_shared_path(path: str) -> str:
    """Return `path` if it is a plain path relative to the shared folder, as the index
    stores it ('/'-separated, each part a valid file name: no empty, '.' or '..' part,
    no leading '/', no NUL, at most MAX_PATH_LENGTH characters); raise InvalidNameError
    otherwise.

    A path is looked up in the index (`WHERE path = ?`) and only an indexed one is
    opened, through `peerfind.sharedfile.open_shared`, which checks it again on disk:
    this refuses early, and says why, what no index can hold.
    """
    if not path:
        raise InvalidNameError("path is empty")
    if len(path) > MAX_PATH_LENGTH:
        raise InvalidNameError(f"path longer than {MAX_PATH_LENGTH} characters")
    if path.startswith("/"):
        raise InvalidNameError("path must be relative to the shared folder (no leading '/')")
    for part in path.split("/"):
        if part in ("", ".", ".."):
            raise InvalidNameError(f"path must not have an empty, '.' or '..' part: {path[:200]!r}")
        try:
            validate_file_name(part)
        except InvalidNameError as exc:
            raise InvalidNameError(f"path part {part[:40]!r}: {exc}") from None
    return path


def base_name(path: str) -> str:
    """The last part of a '/'-separated path."""
    return path.rpartition("/")[2]


def storable(text: str) -> bool:
    """Whether `text` encodes to UTF-8, as every name and path the index stores does (names
    made from undecodable bytes carry lone surrogates: the scanner skips them)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def fold_name(text: str) -> str:
    """The one case-insensitive form of a name or a query: Unicode full case folding
    (`str.casefold`: 'É' is 'é', 'ß' is 'ss', a final sigma is a sigma).

    It maps each character on its own, so a piece of a name folds to a piece of the
    folded name: any substring finds its name. Canonical normalization (NFC/NFD) is
    not applied for that reason: it can merge characters across the cut. Changing
    this function changes what is stored: bump SCHEMA_VERSION with it.
    """
    return text.casefold()


def is_corruption(exc: BaseException) -> bool:
    """True if `exc` is SQLite saying the database file is damaged or is no database."""
    code = getattr(exc, "sqlite_errorcode", None)
    return (
        isinstance(exc, sqlite3.DatabaseError)
        and isinstance(code, int)
        and code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    )


def move_aside(db_path: Path, *, now: float | None = None) -> Path:
    """Rename a database and its WAL companions to `<name>.corrupt-<UTC time>` (kept for
    inspection; nothing is deleted) and return the new path of the database.

    The writer must have closed it first. Readers that still have the old file open
    notice the new one by its inode (`IndexReader`)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    target = db_path.with_name(f"{db_path.name}.corrupt-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = db_path.with_name(f"{db_path.name}.corrupt-{stamp}-{n}")
    if db_path.exists():
        db_path.rename(target)
    for suffix in _WAL_SUFFIXES:
        companion = db_path.with_name(db_path.name + suffix)
        if companion.exists():
            companion.rename(target.with_name(target.name + suffix))
    return target


def _fts_phrase(query: str) -> str:
    return '"' + query.replace('"', '""') + '"'


_Row = tuple[str, str, int, float, int, str | None]


def _entry(row: _Row) -> FileEntry:
    return FileEntry(row[0], row[1], int(row[2]), float(row[3]), int(row[4]), row[5])


class IndexWriter:
    """The only writer of an index database (the indexer process owns it).

    Raises IndexCorrupt when the file is not a database or is a damaged one; with
    `verify`, also when SQLite's `quick_check` (every page, not the FTS internals)
    finds a fault. Any other sqlite3.Error or OSError is raised as it is.
    """

    def __init__(self, db_path: Path, *, verify: bool = False) -> None:
        db_path.parent.mkdir(parents=True, exist_ok=True)
        self.db_path = db_path
        self._conn = sqlite3.connect(
            db_path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        self._lock = threading.Lock()
        try:
            self._open(verify)
        except sqlite3.Error as exc:
            self._conn.close()
            if is_corruption(exc):
                raise IndexCorrupt(f"index {db_path} is corrupt: {exc}") from exc
            raise

    def _open(self, verify: bool) -> None:
        if verify:
            found = self._conn.execute("PRAGMA quick_check(1)").fetchone()
            if found is None or found[0] != "ok":
                fault = found[0] if found else "no answer"
                raise IndexCorrupt(f"index {self.db_path} is corrupt: quick_check: {fault}")
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            # An index is a cache of the shared folder: rebuild it rather than migrate.
            self._conn.executescript(
                "DROP TABLE IF EXISTS files_fts; DROP TABLE IF EXISTS files; "
                "DROP TABLE IF EXISTS meta;"
            )
        self._conn.executescript(_SCHEMA)
        self._conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._refresh_totals()
            self._conn.execute("COMMIT")

    def _refresh_totals(self) -> None:
        files, size = self._conn.execute("SELECT count(*), total(size) FROM files").fetchone()
        now = time.time()
        self._conn.executemany(
            "INSERT INTO meta(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [("files", files), ("bytes", size), ("last_change_at", now)],
        )

    def _set_meta(self, conn: sqlite3.Connection, key: str, value: float) -> None:
        conn.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def replace_all(self, entries: Iterable[FileEntry]) -> SyncStats:
        """Make the index hold exactly `entries`, in one transaction (a full rescan)."""
        rows = [(e.path, e.name, fold_name(e.name), e.size, e.mtime, e.ino) for e in entries]
        with self._transaction() as conn:
            conn.execute(
                "CREATE TEMP TABLE IF NOT EXISTS scan (path TEXT PRIMARY KEY, name TEXT, "
                "folded TEXT, size INTEGER, mtime REAL, ino INTEGER) WITHOUT ROWID"
            )
            conn.execute("DELETE FROM scan")
            conn.executemany("INSERT OR REPLACE INTO scan VALUES (?, ?, ?, ?, ?, ?)", rows)
            removed = conn.execute(
                "DELETE FROM files WHERE path NOT IN (SELECT path FROM scan)"
            ).rowcount
            updated = conn.execute(
                "UPDATE files SET size = s.size, mtime = s.mtime, ino = s.ino, sha256 = NULL "
                "FROM scan AS s WHERE s.path = files.path "
                "AND (files.size != s.size OR files.mtime != s.mtime OR files.ino != s.ino)"
            ).rowcount
            added = conn.execute(
                "INSERT INTO files(path, name, folded, size, mtime, ino) "
                "SELECT path, name, folded, size, mtime, ino FROM scan "
                "WHERE path NOT IN (SELECT path FROM files)"
            ).rowcount
            conn.execute("DELETE FROM scan")
            self._set_meta(conn, "last_scan_at", time.time())
        return SyncStats(added=added, updated=updated, removed=removed, files=len(rows))

    def upsert(self, entries: Iterable[FileEntry]) -> int:
        """Add or refresh single entries (watcher events). Returns rows written."""
        rows = [(e.path, e.name, fold_name(e.name), e.size, e.mtime, e.ino) for e in entries]
        if not rows:
            return 0
        with self._transaction() as conn:
            conn.executemany(
                "INSERT INTO files(path, name, folded, size, mtime, ino) "
                "VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(path) DO UPDATE SET size = excluded.size, mtime = excluded.mtime, "
                "ino = excluded.ino, sha256 = CASE WHEN files.size = excluded.size "
                "AND files.mtime = excluded.mtime AND files.ino = excluded.ino "
                "THEN files.sha256 END",
                rows,
            )
        return len(rows)

    def set_hashes(self, hashed: Iterable[FileEntry]) -> int:
        """Store each entry's `sha256`, only where the row still has the size, mtime and
        inode that were hashed (a file changed meanwhile stays unhashed, for the next
        pass). Returns the rows written."""
        rows = [(e.sha256, e.path, e.size, e.mtime, e.ino) for e in hashed if e.sha256]
        if not rows:
            return 0
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                written = self._conn.executemany(
                    "UPDATE files SET sha256 = ? WHERE path = ? AND size = ? AND mtime = ? "
                    "AND ino = ? AND sha256 IS NULL",
                    rows,
                ).rowcount
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        return written

    def remove(self, paths: Iterable[str]) -> int:
        """Remove entries by exact path, and everything under a path that was a folder."""
        removed = 0
        plist = [p for p in paths if p]
        if not plist:
            return 0
        with self._transaction() as conn:
            for path in plist:
                removed += conn.execute("DELETE FROM files WHERE path = ?", (path,)).rowcount
                # Everything under path/: the range [path/, path0) holds exactly the paths
                # that start with "path/" ("0" sorts right after "/"), and the index on
                # path serves it, where substr() would scan the table once per path.
                prefix = path.rstrip("/")
                removed += conn.execute(
                    "DELETE FROM files WHERE path >= ? AND path < ?", (prefix + "/", prefix + "0")
                ).rowcount
        return removed

    def heartbeat(self) -> None:
        """Record that the indexer is alive (readers report staleness from this)."""
        with self._lock:
            self._set_meta(self._conn, "heartbeat_at", time.time())


class _Interrupted(Exception):
    """A time-bounded query ran past its budget (internal to IndexReader)."""


class IndexReader:
    """Read-only access for the directory and transfer services (thread-safe).

    A missing database (indexer not started yet) reads as an empty index whose
    stats say `available=False`; the reader opens it as soon as it appears.
    """

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self._local = threading.local()

    def _conn(self) -> sqlite3.Connection | None:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        try:
            st = os.stat(self.db_path)
        except OSError:
            st = None
        file_id = (st.st_dev, st.st_ino) if st is not None else None
        if conn is not None:
            if file_id == self._local.file_id:
                return conn
            # The indexer moved a corrupt index aside (or it was deleted): the open
            # connection reads the old file; follow the path instead.
            self._local.conn = None
            conn.close()
        if file_id is None:
            return None
        try:
            conn = sqlite3.connect(
                f"file:{self.db_path}?mode=ro",
                uri=True,
                timeout=_BUSY_TIMEOUT_S,
                check_same_thread=False,
            )
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.Error as exc:
            raise IndexUnavailable(f"cannot open index {self.db_path}: {exc}") from None
        if version != SCHEMA_VERSION:
            conn.close()
            return None  # the indexer is (re)building it
        self._local.conn = conn
        self._local.file_id = file_id
        return conn

    def _query(
        self, sql: str, params: tuple[object, ...], budget_s: float | None = None
    ) -> list[_Row]:
        conn = self._conn()
        if conn is None:
            return []
        interrupted = False
        if budget_s is not None:
            deadline = time.perf_counter() + budget_s

            def past_deadline() -> bool:
                nonlocal interrupted
                interrupted = time.perf_counter() > deadline
                return interrupted  # True makes SQLite abort the statement

            conn.set_progress_handler(past_deadline, _PROGRESS_STEPS)
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            if interrupted:
                raise _Interrupted from None
            self._local.conn = None
            conn.close()
            raise IndexUnavailable(f"index read failed: {exc}") from None
        finally:
            if budget_s is not None:
                conn.set_progress_handler(None, 0)

    def search(self, query: str, limit: int) -> list[FileEntry]:
        """Entries whose name contains `query`, case-insensitively (at most `limit`):
        `fold_name(query)` is a substring of `fold_name(name)`."""
        return self._search(query, limit, None)

    def try_search(self, query: str, limit: int, budget_s: float) -> list[FileEntry] | None:
        """`search`, or None when the query runs longer than about `budget_s` (it is
        then abandoned). Lets an event loop answer the common, sub-millisecond query
        itself and hand only the slow ones to a thread.

        SQLite checks the clock every `_PROGRESS_STEPS` VM steps, so the overshoot is
        what it does between two checks (well under a millisecond for most queries).
        """
        try:
            return self._search(query, limit, budget_s)
        except _Interrupted:
            return None

    def _search(self, query: str, limit: int, budget_s: float | None) -> list[FileEntry]:
        if not query or limit <= 0 or "\x00" in query:
            return []  # no name holds NUL, and FTS5 would read it as the end of the query
        folded = fold_name(query)
        # The length that decides is the folded one ('ß' is two characters, 'ﬃ' three):
        # the trigram index holds folded text.
        if len(folded) >= 3:
            sql = (
                f"SELECT {_COLUMNS} FROM files_fts JOIN files AS f ON f.id = files_fts.rowid "
                "WHERE files_fts MATCH ? LIMIT ?"
            )
            rows = self._query(sql, (_fts_phrase(folded), limit), budget_s)
        else:
            sql = f"SELECT {_COLUMNS} FROM files AS f WHERE instr(f.folded, ?) > 0 LIMIT ?"
            rows = self._query(sql, (folded, limit), budget_s)
        return [_entry(r) for r in rows]

    def list(self, limit: int, after: str = "") -> list[FileEntry]:
        """Entries in path order, starting after the path `after` (keyset pagination)."""
        sql = f"SELECT {_COLUMNS} FROM files AS f WHERE f.path > ? ORDER BY f.path LIMIT ?"
        return [_entry(r) for r in self._query(sql, (after, limit))]

    def lookup(self, name: str) -> FileEntry | None:
        """The entry with base name `name` (the first by path if several share it)."""
        sql = f"SELECT {_COLUMNS} FROM files AS f WHERE f.name = ? ORDER BY f.path LIMIT 1"
        rows = self._query(sql, (name,))
        return _entry(rows[0]) if rows else None

    def lookup_path(self, path: str) -> FileEntry | None:
        """The entry at exactly `path` (relative to the shared folder), if any."""
        rows = self._query(f"SELECT {_COLUMNS} FROM files AS f WHERE f.path = ?", (path,))
        return _entry(rows[0]) if rows else None

    def resolve(self, name: str = "", path: str = "") -> FileEntry | None:
        """The entry a request names: by `path` when it is set (`name`, if set too, must
        be its base name), else by `name` (`lookup`). None when there is none; raises
        InvalidNameError for a name or path no index can hold, or that disagree.

        The one rule for the transfer service and the directory's content route.
        """
        if not path:
            return self.lookup(validate_file_name(name))
        validate_shared_path(path)
        if name and name != base_name(path):
            raise InvalidNameError(
                f"name {name[:80]!r} is not the base name of path {path[:200]!r}"
            )
        return self.lookup_path(path)

    def unhashed(self, limit: int, after_id: int = 0) -> builtins.list[tuple[int, FileEntry]]:
        """Up to `limit` entries with no hash yet, by row id after `after_id` (the
        hasher's cursor), each with its row id."""
        sql = (
            f"SELECT f.id, {_COLUMNS} FROM files AS f "
            "WHERE f.sha256 IS NULL AND f.id > ? ORDER BY f.id LIMIT ?"
        )
        conn = self._conn()
        if conn is None:
            return []
        try:
            rows = conn.execute(sql, (after_id, limit)).fetchall()
        except sqlite3.Error as exc:
            self._local.conn = None
            conn.close()
            raise IndexUnavailable(f"index read failed: {exc}") from None
        return [(int(r[0]), _entry(r[1:])) for r in rows]

    def stats(self) -> IndexStats:
        conn = self._conn()
        if conn is None:
            return IndexStats(available=False)
        try:
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.Error:
            self._local.conn = None
            conn.close()
            return IndexStats(available=False)
        return IndexStats(
            available=True,
            files=int(meta.get("files", 0)),
            bytes=int(meta.get("bytes", 0)),
            last_scan_at=float(meta.get("last_scan_at", 0.0)),
            last_change_at=float(meta.get("last_change_at", 0.0)),
            heartbeat_at=float(meta.get("heartbeat_at", 0.0)),
        )
