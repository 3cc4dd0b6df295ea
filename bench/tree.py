"""Synthetic shared folders for the index benchmarks: many empty files, known names.

Names are `<word>-<7 digits><ext>` with ten extensions in turn, so `.txt` matches
exactly 10% of the files and a 7-digit number matches one. The same names feed
the on-disk trees (scan, memory) and the in-memory lists (the query baseline).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["EXTS", "WORDS", "make_tree", "names"]

WORDS = [
    "photo",
    "song",
    "notes",
    "invoice",
    "backup",
    "draft",
    "video",
    "scan",
    "slides",
    "report",
    "thesis",
    "budget",
    "recipe",
    "ticket",
    "manual",
    "poster",
]
EXTS = [".jpg", ".mp3", ".txt", ".pdf", ".tar", ".doc", ".mp4", ".png", ".odp", ".csv"]
PER_DIR = 1000


def names(count: int) -> Iterator[str]:
    """The `count` file names, in tree order."""
    for i in range(count):
        yield f"{WORDS[i * 7 % len(WORDS)]}-{i:07d}{EXTS[i % len(EXTS)]}"


def make_tree(root: Path, count: int) -> Path:
    """`count` empty files under `root`, PER_DIR to a folder (`dNNNN/`). Returns root."""
    flags = os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC
    folder = ""
    root.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names(count)):
        if i % PER_DIR == 0:
            folder = str(root / f"d{i // PER_DIR:04d}")
            os.mkdir(folder)
        os.close(os.open(os.path.join(folder, name), flags, 0o644))
    return root
