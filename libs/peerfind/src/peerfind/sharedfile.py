"""Open a file of the shared folder for reading, safely, and notice when it changes.

    with open_shared("/srv/peerfind/shared", "music/a.flac") as f:
        data = f.read(0, 65536)     # pread: no shared file position
        f.check_unchanged()         # raises FileChanged if it was written meanwhile

The transfer service (Download) and the indexer's hasher read through this one
module, so what can be served and what can be hashed are the same files. Refused,
whatever the index says:

- a relative path that is absolute, empty, or has an empty, '.' or '..' part;
- anything whose real path (every symlink resolved) is outside the root, checked
  before opening and again on the opened descriptor (`/proc/self/fd`), so a
  directory swapped for a symlink between the two is caught;
- anything but a regular file (a FIFO or device is opened with O_NONBLOCK, so
  opening one never blocks, and refused on its fstat);
- a regular file with more than one hard link: nothing on a file says where its
  other names are, and one may be outside the shared folder.

A change is a new size, mtime or ctime (every write moves ctime) of the opened
file; a file replaced by rename keeps the old inode open, which is one version.
"""

from __future__ import annotations

import errno
import os
import stat
from types import TracebackType
from typing import Self

from peerfind.errors import PeerfindError

__all__ = [
    "FileChanged",
    "SharedFile",
    "SharedFileError",
    "SharedFileMissing",
    "SharedFileRefused",
    "open_shared",
]

_OPEN_FLAGS = (
    os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0)
)


class SharedFileError(PeerfindError):
    """A shared file that cannot be served; `reason` is a short label for metrics."""

    reason = "error"


class SharedFileMissing(SharedFileError):
    """The path names nothing (the index is behind the disk)."""

    reason = "missing"


class SharedFileRefused(SharedFileError):
    """The path names something that must not be served."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class FileChanged(SharedFileError):
    """The file was written while it was being read."""

    reason = "changed"


def _inside(root: str, path: str) -> bool:
    return path.startswith(root.rstrip("/") + "/")


def _check_relative(rel: str) -> None:
    if not rel or rel.startswith("/") or "\x00" in rel:
        raise SharedFileRefused("path", f"{rel!r} is not a relative path")
    if any(part in ("", ".", "..") for part in rel.split("/")):
        raise SharedFileRefused("path", f"{rel!r} has an empty, '.' or '..' part")


class SharedFile:
    """An open regular file of the shared folder (close it, or use `with`)."""

    def __init__(self, fd: int, rel: str, st: os.stat_result) -> None:
        self.fd = fd
        self.path = rel
        self.size = st.st_size
        self.mtime = st.st_mtime
        self.ino = st.st_ino
        self._signature = (st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def read(self, offset: int, length: int) -> bytes:
        """Up to `length` bytes at `offset` (fewer only at the end of the file)."""
        return os.pread(self.fd, length, offset)

    def check_unchanged(self) -> None:
        """Raise FileChanged if the file's size, mtime or ctime moved since it was opened."""
        st = os.fstat(self.fd)
        if (st.st_size, st.st_mtime_ns, st.st_ctime_ns) != self._signature:
            raise FileChanged(f"{self.path} changed while it was being read")

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def open_shared(root: str | os.PathLike[str], rel: str) -> SharedFile:
    """Open `rel` (relative, '/'-separated) under the shared folder `root`.

    Raises SharedFileRefused (what must not be served, with a reason label),
    SharedFileMissing (nothing there), or SharedFileError (another OS error).
    """
    _check_relative(rel)
    real_root = os.path.realpath(root)
    target = os.path.realpath(os.path.join(real_root, rel))
    if not _inside(real_root, target):
        raise SharedFileRefused("outside", f"{rel} points outside the shared folder")
    try:
        fd = os.open(target, _OPEN_FLAGS)
    except FileNotFoundError:
        raise SharedFileMissing(f"{rel} is no longer in the shared folder") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # the last part became a symlink after realpath
            raise SharedFileRefused("outside", f"{rel} changed into a symlink") from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise SharedFileRefused("unreadable", f"{rel} is not readable") from None
        raise SharedFileError(f"cannot open {rel}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SharedFileRefused("special", f"{rel} is not a regular file")
        if st.st_nlink > 1:
            raise SharedFileRefused(
                "hard_link", f"{rel} has {st.st_nlink} hard links; one may be outside"
            )
        try:
            opened = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            opened = target  # no procfs: the realpath check above is what we have
        if not _inside(real_root, opened):
            raise SharedFileRefused("outside", f"{rel} points outside the shared folder")
    except BaseException:
        os.close(fd)
        raise
    return SharedFile(fd, rel, st)
