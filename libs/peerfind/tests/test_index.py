"""The SQLite index: one writer, readers that never see half a rescan."""

from __future__ import annotations

import re
import sqlite3
import threading
from pathlib import Path

import pytest

from peerfind.errors import IndexCorrupt, IndexUnavailable, InvalidNameError
from peerfind.index import (
    MAX_PATH_LENGTH,
    FileEntry,
    IndexReader,
    IndexWriter,
    is_corruption,
    move_aside,
    validate_file_name,
    validate_shared_path,
)


def entry(path: str, size: int = 1, mtime: float = 1.0) -> FileEntry:
    return FileEntry(path=path, name=path.rsplit("/", 1)[-1], size=size, mtime=mtime)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "index.sqlite3"


def test_missing_database_reads_as_empty_and_unavailable(db: Path) -> None:
    reader = IndexReader(db)
    assert reader.search("abc", 10) == []
    assert reader.lookup("x") is None
    assert reader.stats().available is False
    IndexWriter(db).replace_all([entry("late.txt")])
    assert [e.name for e in reader.search("late", 10)] == ["late.txt"]  # opens once it exists


def test_replace_all_diffs_and_counts(db: Path) -> None:
    writer = IndexWriter(db)
    first = writer.replace_all([entry("a.txt", 1), entry("d/b.txt", 2), entry("c.bin", 3)])
    assert (first.added, first.updated, first.removed) == (3, 0, 0)
    second = writer.replace_all([entry("a.txt", 10), entry("c.bin", 3), entry("e.txt", 5)])
    assert (second.added, second.updated, second.removed) == (1, 1, 1)
    reader = IndexReader(db)
    assert [(e.path, e.size) for e in reader.list(10)] == [
        ("a.txt", 10),
        ("c.bin", 3),
        ("e.txt", 5),
    ]
    stats = reader.stats()
    assert (stats.files, stats.bytes) == (3, 18)
    assert stats.last_scan_at > 0


def test_search_substring_case_insensitive_and_short(db: Path) -> None:
    writer = IndexWriter(db)
    writer.replace_all(
        [entry("Hello1.TXT"), entry("x/hello2.txt"), entry("b.bin"), entry("100%_done")]
    )
    reader = IndexReader(db)
    assert sorted(e.name for e in reader.search("hello", 10)) == ["Hello1.TXT", "hello2.txt"]
    assert sorted(e.name for e in reader.search(".txt", 10)) == ["Hello1.TXT", "hello2.txt"]
    assert [e.name for e in reader.search("B", 10)] == ["b.bin"]
    assert [e.name for e in reader.search("%_", 10)] == ["100%_done"]  # LIKE wildcards escaped
    assert [e.name for e in reader.search("%_d", 10)] == ["100%_done"]
    assert reader.search('"', 10) == []
    assert reader.search('a"b', 10) == []  # FTS quoting does not break
    assert len(reader.search("l", 1)) == 1


def test_upsert_remove_and_folder_removal(db: Path) -> None:
    writer = IndexWriter(db)
    writer.replace_all([entry("dir/a.txt"), entry("dir/sub/b.txt"), entry("dirx/c.txt")])
    writer.upsert([entry("dir/a.txt", size=99), entry("new.txt")])
    reader = IndexReader(db)
    assert reader.lookup("a.txt").size == 99  # type: ignore[union-attr]
    assert writer.remove(["dir"]) == 2
    assert [e.path for e in reader.list(10)] == ["dirx/c.txt", "new.txt"]  # prefix is exact


def test_lookup_is_deterministic_for_duplicate_names(db: Path) -> None:
    IndexWriter(db).replace_all([entry("z/same.txt", 2), entry("a/same.txt", 1)])
    assert IndexReader(db).lookup("same.txt").path == "a/same.txt"  # type: ignore[union-attr]


def test_reader_is_read_only(db: Path) -> None:
    IndexWriter(db).replace_all([entry("a.txt")])
    reader = IndexReader(db)
    reader.stats()
    conn = reader._conn()
    assert conn is not None
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        conn.execute("DELETE FROM files")


def test_readers_never_see_half_a_rescan(db: Path) -> None:
    writer = IndexWriter(db)
    old = [entry(f"old/{i}.txt") for i in range(2000)]
    new = [entry(f"new/{i}.txt") for i in range(2000)]
    writer.replace_all(old)
    reader = IndexReader(db)
    seen: set[int] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.add(len(reader.list(5000)))

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for _ in range(5):
            writer.replace_all(new)
            writer.replace_all(old)
    finally:
        stop.set()
        thread.join()
    assert seen == {2000}


def test_writer_rebuilds_an_index_of_another_schema_version(db: Path) -> None:
    IndexWriter(db).replace_all([entry("a.txt")])
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA user_version=99")
    assert IndexReader(db).stats().available is False
    IndexWriter(db).replace_all([entry("b.txt")])
    assert [e.name for e in IndexReader(db).list(10)] == ["b.txt"]


@pytest.mark.parametrize("name", ["", "a/b", "..", "../x", "x\x00y", ".", "a" * 256, "bad\udc80"])
def test_invalid_names(name: str) -> None:
    with pytest.raises(InvalidNameError):
        validate_file_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "hello1.txt",
        ".hidden",
        "ñandú.md",
        "a b (1).pdf",
        # Names are looked up in the index, never joined to a path: what a POSIX base
        # name may hold is a name (issue 17, item 16: these were listed, not served).
        "tab\there.txt",
        "new\nline.txt",
        "a..b",
        "...",
        "..x",
        "back\\slash",
        "esc\x1b[31m.txt",
        "a" * 255,
    ],
)
def test_valid_names(name: str) -> None:
    assert validate_file_name(name) == name


@pytest.mark.parametrize(
    "path",
    [
        "",
        "/etc/passwd",
        "../x",
        "a/../b",
        "a/./b",
        "a//b",
        "a/",
        ".",
        "..",
        "a/b\x00c",
        "x" * (MAX_PATH_LENGTH + 1),
        "d/" + "n" * 256,
        "bad\udc80/x",
    ],
)
def test_invalid_shared_paths(path: str) -> None:
    with pytest.raises(InvalidNameError):
        validate_shared_path(path)


@pytest.mark.parametrize(
    "path",
    ["a.txt", "a/b/c.txt", "dir with spaces/tab\there", "a..b/..c/c..", "x/" * 2046 + "y"],
)
def test_valid_shared_paths(path: str) -> None:
    assert validate_shared_path(path) == path


def test_lookup_path_tells_same_named_files_apart(db: Path) -> None:
    IndexWriter(db).replace_all([entry("b/dup.txt", 2), entry("a/dup.txt", 1), entry("dup.txt", 3)])
    reader = IndexReader(db)
    assert reader.lookup_path("b/dup.txt").size == 2  # type: ignore[union-attr]
    assert reader.lookup_path("a/dup.txt").size == 1  # type: ignore[union-attr]
    assert reader.lookup_path("dup.txt").size == 3  # type: ignore[union-attr]
    assert reader.lookup_path("c/dup.txt") is None
    assert reader.lookup_path("dup") is None  # exact, never a prefix or a pattern
    assert reader.lookup_path("%/dup.txt") is None


def test_resolve_by_path_or_name(db: Path) -> None:
    IndexWriter(db).replace_all([entry("b/dup.txt", 2), entry("a/dup.txt", 1), entry("t/a\tb", 9)])
    reader = IndexReader(db)
    assert reader.resolve("dup.txt").path == "a/dup.txt"  # type: ignore[union-attr]
    assert reader.resolve("dup.txt", "b/dup.txt").size == 2  # type: ignore[union-attr]
    assert reader.resolve("", "b/dup.txt").size == 2  # type: ignore[union-attr]
    assert reader.resolve("a\tb").path == "t/a\tb"  # type: ignore[union-attr]
    assert reader.resolve("dup.txt", "c/dup.txt") is None
    with pytest.raises(InvalidNameError, match="not the base name"):
        reader.resolve("other.txt", "b/dup.txt")
    with pytest.raises(InvalidNameError, match=re.escape("'..' part")):
        reader.resolve("", "a/../b/dup.txt")
    with pytest.raises(InvalidNameError, match="empty"):
        reader.resolve("", "")


def test_try_search_gives_up_past_its_budget_and_the_reader_stays_usable(db: Path) -> None:
    """The directory runs searches on its event loop within a budget
    (`directory.node.INLINE_SEARCH_BUDGET_S`); a slower one is abandoned
    (None) and run again on a thread. Abandoning must not break the connection."""
    IndexWriter(db).replace_all([entry(f"dir{i % 50}/file{i:06d}.txt") for i in range(30_000)])
    reader = IndexReader(db)
    # A 1-character query scans the folded names; one nanosecond is over at the first check.
    assert reader.try_search("e", 100_000, budget_s=1e-9) is None
    assert len(reader.search("e", 100_000)) == 30_000
    assert [e.name for e in reader.try_search("file000123", 10, budget_s=5.0) or []] == [
        "file000123.txt"
    ]
    assert reader.stats().files == 30_000


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("É", ["été.txt"]),  # one character: the short-query scan (issue 17, item 17)
        ("ÉT", ["été.txt"]),  # two
        ("ÉTÉ", ["été.txt"]),  # three: the trigram index
        ("été.TXT", ["été.txt"]),
        ("ß", ["Straße.md"]),  # full case folding: 'ß' is 'ss' on both sides
        ("SS", ["Straße.md"]),
        ("STRASSE", ["Straße.md"]),
        ("Ω", ["ωmega.bin"]),
        ("ΣΑ", ["ςαλ.bin"]),  # final sigma folds to sigma
        ("ǅ", ["ǆx.bin"]),  # titlecase digraph
    ],
)
def test_search_folds_case_the_same_way_for_short_and_long_non_ascii_queries(
    db: Path, query: str, expected: list[str]
) -> None:
    IndexWriter(db).replace_all(
        [
            entry("été.txt"),
            entry("Straße.md"),
            entry("ωmega.bin"),
            entry("ςαλ.bin"),
            entry("ǆx.bin"),
        ]
    )
    assert sorted(e.name for e in IndexReader(db).search(query, 10)) == expected


def test_reader_follows_an_index_moved_aside_and_rebuilt(db: Path) -> None:
    """A directory's reader keeps a connection per thread; when the indexer moves a
    corrupt index aside and writes a new one, the reader must read the new file, not
    keep serving the old one (issue 17, item 13)."""
    writer = IndexWriter(db)
    writer.replace_all([entry("old.txt")])
    reader = IndexReader(db)
    assert [e.name for e in reader.search("old", 10)] == ["old.txt"]
    writer.close()
    moved = move_aside(db, now=0.0)
    assert moved.name == "index.sqlite3.corrupt-19700101T000000Z"
    assert move_aside(db, now=0.0).name.endswith("-2")  # never overwrites a kept copy
    assert reader.search("old", 10) == []  # no index now: empty, not the old file
    assert reader.stats().available is False
    IndexWriter(db).replace_all([entry("new.txt")])
    assert [e.name for e in reader.search(".txt", 10)] == ["new.txt"]


def test_writer_reports_a_file_that_is_no_database_as_corrupt(db: Path) -> None:
    db.parent.mkdir(parents=True)
    db.write_bytes(b"not a database" * 300)
    with pytest.raises(IndexCorrupt, match="is corrupt: file is not a database"):
        IndexWriter(db)
    assert db.read_bytes() == b"not a database" * 300  # left as it was
    with pytest.raises(IndexUnavailable):
        IndexReader(db).search("x", 1)
    assert is_corruption(sqlite3.DatabaseError("no code")) is False
