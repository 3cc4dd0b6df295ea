"""Turn what is in the shared folder into index entries (no I/O besides reading the tree).

    scanner = Scanner(Path("/srv/shared"))
    result = scanner.scan()          # the whole tree; scanner.scan("music/live") for a subtree
    result.entries                   # FileEntry per file: path relative, '/'-separated
    result.skipped                   # Skipped(path, reason, detail) for what was left out
    scanner.probe("/srv/shared/a/b.txt")   # one path, as the watcher sees it

The same rules apply to a full scan and to a single path:

- a regular file is indexed with its size, mtime and inode (one lstat per file, as in a
  bare `scandir` + `stat` walk; the readability check needs no further system
  call when the permission bits grant reading);
- a directory is descended; a symlink is never followed into a directory, and
  nothing is indexed through one;
- a symlink to a file is indexed (size and mtime of its target) when its resolved
  target stays inside the root; a target outside is `symlink_outside`, a missing
  one (or a loop) is `dangling_symlink`;
- a file that `is_readable` refuses (its permission bits, then `os.access`), or
  whose stat fails with a permission error, and a directory that cannot be
  listed, are `unreadable`;
- fifos, sockets and devices are `special`;
- a name that is not valid UTF-8 cannot be stored in the index: `error`.

One bad entry never stops a scan: it becomes a `Skipped` and the walk goes on.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import NamedTuple, TypeAlias

from peerfind.index import FileEntry, storable

__all__ = [
    "Directory",
    "Probe",
    "ScanCancelled",
    "ScanResult",
    "Scanner",
    "SkipReason",
    "Skipped",
    "entry_for",
    "is_readable",
    "scan_tree",
]


class SkipReason(StrEnum):
    """Why an entry of the shared folder is not in the index (the metric label)."""

    SYMLINK_OUTSIDE = "symlink_outside"
    DANGLING_SYMLINK = "dangling_symlink"
    UNREADABLE = "unreadable"
    SPECIAL = "special"
    ERROR = "error"


class Skipped(NamedTuple):
    """An entry left out of the index: relative path, reason, and a readable detail."""

    path: str
    reason: SkipReason
    detail: str


@dataclass(frozen=True, slots=True)
class Directory:
    """A real (not symlinked) directory inside the root, by relative path."""

    path: str


@dataclass(slots=True)
class ScanResult:
    """What a walk found: the entries to index and what it left out."""

    entries: list[FileEntry] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


Probe: TypeAlias = FileEntry | Directory | Skipped | None
"""What one path is now: a file to index, a directory to walk, a skip, or nothing
(missing, the root itself, outside the root, under a symlinked directory, or a
symlink to a directory inside the root, which is indexed by its real path)."""


class ScanCancelled(Exception):
    """A walk was stopped by its `cancelled` callback (the service is shutting down)."""


_UID = os.getuid()
_GROUPS = frozenset([os.getgid(), *os.getgroups()])


def is_readable(path: str, st: os.stat_result) -> bool:
    """Whether this process may read the file `path` whose stat result is `st`.

    The permission bits that apply to us (owner, else group, else other) answer
    without a system call when they grant reading; only when they refuse does
    `os.access` decide (an ACL entry or a capability, as root has, may still grant
    it). This keeps a full scan close to a bare scandir + stat walk. The one case
    it misjudges is an ACL that names our user to deny what the mode bits allow;
    the transfer service still reports an error if it then cannot open the file.
    A module function, so tests can replace it.
    """
    mode = st.st_mode
    if st.st_uid == _UID:
        granted = mode & stat.S_IRUSR
    elif st.st_gid in _GROUPS:
        granted = mode & stat.S_IRGRP
    else:
        granted = mode & stat.S_IROTH
    return bool(granted) or os.access(path, os.R_OK)


def _os_skip(rel: str, exc: OSError) -> Skipped:
    reason = SkipReason.UNREADABLE if isinstance(exc, PermissionError) else SkipReason.ERROR
    return Skipped(rel, reason, exc.strerror or str(exc))


def _not_utf8(rel: str) -> Skipped:
    return Skipped(rel, SkipReason.ERROR, "name is not valid UTF-8")


class Scanner:
    """Walks one root; holds its resolved path so containment checks are string compares."""

    def __init__(self, root: Path | str) -> None:
        self.root = os.path.realpath(root)
        self._prefix = self.root.rstrip("/") + "/"

    def relative(self, path: Path | str) -> str | None:
        """`path` (absolute, or relative to the root) as a '/'-separated relative path.

        "" is the root itself; None means the path is outside the root.
        """
        full = os.path.normpath(os.path.join(self.root, path))
        if full == self.root:
            return ""
        if full.startswith(self._prefix):
            return full[len(self._prefix) :]
        return None

    def scan(self, subdir: str = "", cancelled: Callable[[], bool] | None = None) -> ScanResult:
        """Walk the root (or the relative directory `subdir`) recursively.

        A root that cannot be listed raises OSError (the scan failed); a subtree
        that vanished meanwhile yields nothing. `cancelled` is asked once per
        directory and raises ScanCancelled when it answers True.
        """
        readable = is_readable  # looked up per scan, so tests can patch the module function
        entries: list[FileEntry] = []
        skipped: list[Skipped] = []
        add = entries.append
        top = self._prefix + subdir if subdir else self.root
        stack: list[tuple[str, str]] = [(top, subdir + "/" if subdir else "")]
        while stack:
            if cancelled is not None and cancelled():
                raise ScanCancelled
            directory, rel = stack.pop()
            try:
                with os.scandir(directory) as it:
                    for entry in it:
                        name = entry.name
                        path = rel + name
                        if not name.isascii() and not storable(name):
                            skipped.append(_not_utf8(path))
                            continue
                        try:
                            if entry.is_dir(follow_symlinks=False):
                                stack.append((entry.path, path + "/"))
                            elif entry.is_file(follow_symlinks=False):
                                st = entry.stat(follow_symlinks=False)
                                if readable(entry.path, st):
                                    add(FileEntry(path, name, st.st_size, st.st_mtime, st.st_ino))
                                else:
                                    skipped.append(
                                        Skipped(path, SkipReason.UNREADABLE, "not readable")
                                    )
                            elif entry.is_symlink():
                                found = self._symlink(entry.path, path, name, readable)
                                if isinstance(found, FileEntry):
                                    add(found)
                                elif found is not None:
                                    skipped.append(found)
                            else:
                                skipped.append(
                                    Skipped(path, SkipReason.SPECIAL, "not a regular file")
                                )
                        except OSError as exc:
                            skipped.append(_os_skip(path, exc))
            except OSError as exc:
                if directory == self.root:
                    raise
                if directory == top and isinstance(exc, FileNotFoundError | NotADirectoryError):
                    continue  # the subtree went away before we got to it
                skipped.append(_os_skip(rel.rstrip("/"), exc))
        return ScanResult(entries, skipped)

    def _symlink(
        self, link: str, rel: str, name: str, readable: Callable[[str, os.stat_result], bool]
    ) -> FileEntry | Skipped | None:
        """A symlink inside the root: its target's entry if allowed, else why not."""
        target = os.path.realpath(link)
        try:
            st = os.stat(target)
        except PermissionError as exc:
            return Skipped(rel, SkipReason.UNREADABLE, f"target {target}: {exc.strerror}")
        except OSError as exc:
            return Skipped(
                rel, SkipReason.DANGLING_SYMLINK, f"target {target}: {exc.strerror or exc}"
            )
        if target != self.root and not target.startswith(self._prefix):
            return Skipped(
                rel, SkipReason.SYMLINK_OUTSIDE, f"target {target} is outside the shared folder"
            )
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            return None  # never followed; the directory is indexed by its real path
        if not stat.S_ISREG(mode):
            return Skipped(rel, SkipReason.SPECIAL, f"target {target} is not a regular file")
        if not readable(target, st):
            return Skipped(rel, SkipReason.UNREADABLE, f"target {target} is not readable")
        return FileEntry(rel, name, st.st_size, st.st_mtime, st.st_ino)

    def probe(self, path: Path | str) -> Probe:
        """What `path` (absolute, or relative to the root) is now, by the rules above."""
        rel = self.relative(path)
        if not rel:
            return None
        if not storable(rel):
            return _not_utf8(rel)
        head, _, name = rel.rpartition("/")
        if head:
            parent = self._prefix + head
            if os.path.realpath(parent) != parent:
                return None  # under a symlinked directory (or gone): never indexed
        full = self._prefix + rel
        try:
            st = os.lstat(full)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            return _os_skip(rel, exc)
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            return Directory(rel)
        if stat.S_ISREG(mode):
            if is_readable(full, st):
                return FileEntry(rel, name, st.st_size, st.st_mtime, st.st_ino)
            return Skipped(rel, SkipReason.UNREADABLE, "not readable")
        if stat.S_ISLNK(mode):
            return self._symlink(full, rel, name, is_readable)
        return Skipped(rel, SkipReason.SPECIAL, "not a regular file")

    def entry_for(self, path: Path | str) -> FileEntry | None:
        """The index entry for `path` if it is an indexable file now, else None."""
        found = self.probe(path)
        return found if isinstance(found, FileEntry) else None


def scan_tree(root: Path) -> ScanResult:
    """Walk `root` recursively; see `Scanner.scan`."""
    return Scanner(root).scan()


def entry_for(root: Path, path: Path | str) -> FileEntry | None:
    """The index entry for `path` under `root`, or None; see `Scanner.probe`."""
    return Scanner(root).entry_for(path)
