"""Tests of the scanner: what a walk indexes, what it skips and why, single-path probes."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from indexer import scanner
from indexer.scanner import (
    Directory,
    ScanCancelled,
    Scanner,
    Skipped,
    SkipReason,
    entry_for,
    is_readable,
    scan_tree,
)
from peerfind.index import FileEntry


def write(path: Path, data: bytes = b"", mtime: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def by_path(entries: list[FileEntry]) -> dict[str, FileEntry]:
    return {e.path: e for e in entries}


def reasons(skipped: list[Skipped]) -> dict[str, SkipReason]:
    return {s.path: s.reason for s in skipped}


def ino(root: Path, rel: str) -> int:
    return (root / rel).stat().st_ino


def test_nested_tree_relative_paths_names_sizes_mtimes(shared: Path) -> None:
    write(shared / "top.txt", b"abc", mtime=1_600_000_000.5)
    write(shared / "a" / "x.bin", b"\x00" * 10, mtime=1_600_000_100.0)
    write(shared / "a" / "b" / "c" / "deep file.md", b"deep", mtime=1_600_000_200.25)
    (shared / "empty").mkdir()

    result = scan_tree(shared)

    assert sorted(result.entries, key=lambda e: e.path) == [
        FileEntry(
            "a/b/c/deep file.md",
            "deep file.md",
            4,
            1_600_000_200.25,
            ino(shared, "a/b/c/deep file.md"),
        ),
        FileEntry("a/x.bin", "x.bin", 10, 1_600_000_100.0, ino(shared, "a/x.bin")),
        FileEntry("top.txt", "top.txt", 3, 1_600_000_000.5, ino(shared, "top.txt")),
    ]
    assert all(type(e) is FileEntry for e in result.entries)
    assert result.skipped == []


def test_subtree_scan_keeps_paths_relative_to_root(shared: Path) -> None:
    write(shared / "music" / "live" / "a.flac", b"1")
    write(shared / "music" / "b.flac", b"22")
    write(shared / "other.txt")

    result = Scanner(shared).scan("music")

    assert sorted(by_path(result.entries)) == ["music/b.flac", "music/live/a.flac"]


def test_symlink_to_file_inside_is_indexed_with_target_stat(shared: Path) -> None:
    target = write(shared / "data" / "real.bin", b"12345", mtime=1_650_000_000.0)
    (shared / "alias.bin").symlink_to(target)
    (shared / "rel-alias.bin").symlink_to("data/real.bin")

    entries = by_path(scan_tree(shared).entries)

    assert entries["alias.bin"] == FileEntry(
        "alias.bin", "alias.bin", 5, 1_650_000_000.0, target.stat().st_ino
    )
    assert entries["rel-alias.bin"].size == 5
    assert "data/real.bin" in entries


def test_symlink_outside_root_is_skipped(shared: Path, tmp_path: Path) -> None:
    secret = write(tmp_path / "outside" / "secret.txt", b"secret")
    (shared / "leak.txt").symlink_to(secret)
    (shared / "escape").symlink_to("../outside")
    write(shared / "ok.txt")

    result = scan_tree(shared)

    assert sorted(by_path(result.entries)) == ["ok.txt"]
    assert reasons(result.skipped) == {
        "leak.txt": SkipReason.SYMLINK_OUTSIDE,
        "escape": SkipReason.SYMLINK_OUTSIDE,
    }


def test_dangling_and_looping_symlinks_are_skipped(shared: Path) -> None:
    (shared / "gone.txt").symlink_to(shared / "never-existed.txt")
    (shared / "loop1").symlink_to("loop2")
    (shared / "loop2").symlink_to("loop1")

    result = scan_tree(shared)

    assert result.entries == []
    assert reasons(result.skipped) == {
        "gone.txt": SkipReason.DANGLING_SYMLINK,
        "loop1": SkipReason.DANGLING_SYMLINK,
        "loop2": SkipReason.DANGLING_SYMLINK,
    }


def test_symlinked_directory_is_not_descended(shared: Path) -> None:
    write(shared / "real" / "inner.txt", b"x")
    (shared / "linked").symlink_to(shared / "real", target_is_directory=True)
    (shared / "self").symlink_to(shared, target_is_directory=True)

    result = scan_tree(shared)

    assert sorted(by_path(result.entries)) == ["real/inner.txt"]
    assert result.skipped == []  # not followed, but nothing is hidden either


def test_unreadable_file_is_skipped(shared: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(shared / "open.txt", b"o")
    locked = write(shared / "dir" / "locked.txt", b"l")
    (shared / "alias").symlink_to(locked)
    real = scanner.is_readable
    monkeypatch.setattr(
        scanner, "is_readable", lambda path, st: path != str(locked) and real(path, st)
    )

    result = scan_tree(shared)

    assert sorted(by_path(result.entries)) == ["open.txt"]
    assert reasons(result.skipped) == {
        "dir/locked.txt": SkipReason.UNREADABLE,
        "alias": SkipReason.UNREADABLE,
    }


def test_unlistable_directory_is_skipped_and_the_rest_indexed(
    shared: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(shared / "fine" / "a.txt")
    write(shared / "private" / "b.txt")
    real_scandir = os.scandir
    blocked = str(shared / "private")

    def scandir(path: str) -> Iterator[os.DirEntry[str]]:
        if path == blocked:
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(scanner.os, "scandir", scandir)

    result = scan_tree(shared)

    assert sorted(by_path(result.entries)) == ["fine/a.txt"]
    assert result.skipped == [Skipped("private", SkipReason.UNREADABLE, "Permission denied")]


def test_fifo_is_skipped_as_special(shared: Path) -> None:
    os.mkfifo(shared / "pipe")
    (shared / "pipe-link").symlink_to(shared / "pipe")
    write(shared / "file.txt")

    result = scan_tree(shared)

    assert sorted(by_path(result.entries)) == ["file.txt"]
    assert reasons(result.skipped) == {
        "pipe": SkipReason.SPECIAL,
        "pipe-link": SkipReason.SPECIAL,
    }


def test_name_that_is_not_utf8_is_skipped(shared: Path) -> None:
    raw = os.fsencode(shared) + b"/bad\xff.txt"
    fd = os.open(raw, os.O_CREAT | os.O_WRONLY, 0o644)
    os.close(fd)
    write(shared / "good.txt")

    result = scan_tree(shared)

    assert sorted(by_path(result.entries)) == ["good.txt"]
    assert [s.reason for s in result.skipped] == [SkipReason.ERROR]


def test_missing_root_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        scan_tree(tmp_path / "nope")


def test_vanished_subtree_yields_nothing(shared: Path) -> None:
    assert Scanner(shared).scan("not-there") == scanner.ScanResult([], [])


def test_cancelled_scan_raises(shared: Path) -> None:
    write(shared / "a.txt")
    with pytest.raises(ScanCancelled):
        Scanner(shared).scan(cancelled=lambda: True)


def test_probe_classifies_one_path(shared: Path, tmp_path: Path) -> None:
    write(shared / "d" / "f.txt", b"four", mtime=1_700_000_000.0)
    (shared / "link-d").symlink_to(shared / "d", target_is_directory=True)
    (shared / "out").symlink_to(tmp_path)
    s = Scanner(shared)

    f_txt = FileEntry("d/f.txt", "f.txt", 4, 1_700_000_000.0, ino(shared, "d/f.txt"))
    assert s.probe(shared / "d" / "f.txt") == f_txt
    assert s.probe("d/f.txt") == f_txt
    assert s.probe(str(shared / "d")) == Directory("d")
    assert s.probe(shared / "missing.txt") is None
    assert s.probe(shared / "link-d" / "f.txt") is None  # through a symlinked directory
    assert s.probe(shared / "link-d") is None  # not followed
    assert s.probe(shared) is None
    assert s.probe(tmp_path / "elsewhere.txt") is None
    out = s.probe(shared / "out")
    assert isinstance(out, Skipped)
    assert out.reason is SkipReason.SYMLINK_OUTSIDE
    assert entry_for(shared, shared / "d" / "f.txt") == s.probe("d/f.txt")
    assert entry_for(shared, shared / "d") is None


def test_relative(shared: Path, tmp_path: Path) -> None:
    s = Scanner(shared)
    assert s.relative(shared / "a" / "b.txt") == "a/b.txt"
    assert s.relative("a/../c.txt") == "c.txt"
    assert s.relative(shared) == ""
    assert s.relative(tmp_path / "sharedness") is None
    assert s.relative(shared / ".." / "x") is None


def test_root_given_through_a_symlink_is_resolved(shared: Path, tmp_path: Path) -> None:
    write(shared / "a.txt", b"a")
    alias = tmp_path / "alias"
    alias.symlink_to(shared, target_is_directory=True)
    (shared / "inside.txt").symlink_to(shared / "a.txt")

    result = scan_tree(alias)

    assert sorted(by_path(result.entries)) == ["a.txt", "inside.txt"]


def _stat(mode: int, uid: int, gid: int) -> os.stat_result:
    return os.stat_result((mode, 0, 0, 1, uid, gid, 0, 0, 0, 0))


def test_is_readable_uses_the_permission_class_that_applies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[str] = []

    def access(path: str, mode: int) -> bool:
        asked.append(path)
        return False

    monkeypatch.setattr(scanner.os, "access", access)
    me, my_group = os.getuid(), os.getgid()
    other_uid, other_gid = me + 4242, 4_000_000
    reg = stat.S_IFREG

    assert is_readable("own", _stat(reg | 0o400, me, other_gid))
    assert is_readable("group", _stat(reg | 0o040, other_uid, my_group))
    assert is_readable("other", _stat(reg | 0o004, other_uid, other_gid))
    assert asked == []  # granted by the mode bits: no system call
    # The owner class decides for the owner, even if "other" may read.
    assert not is_readable("own-denied", _stat(reg | 0o044, me, other_gid))
    assert not is_readable("other-denied", _stat(reg | 0o440, other_uid, other_gid))
    assert asked == ["own-denied", "other-denied"]


def test_is_readable_lets_access_grant_what_the_bits_refuse(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(scanner.os, "access", lambda path, mode: True)
    assert is_readable("acl", _stat(stat.S_IFREG, os.getuid() + 1, 4_000_000))
