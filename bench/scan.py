"""Index scan: the indexer's walk of 100,000 files against a bare scandir + stat walk.

The benchmark makes the tree (100 folders of 1,000 empty files) in a temp dir, walks
it once to warm the dentry and inode caches, then alternates the bare walk and
`indexer.scanner.Scanner.scan()` (what a full rescan runs before it writes the
index: every rule of the scanner, FileEntry objects out). Best of the runs each.
Writing the result to the index (`IndexWriter.replace_all`) is timed once beside
it, for context.
"""

from __future__ import annotations

import os
import shutil
import time

from bench.core import Context, Result
from bench.tree import make_tree
from indexer.scanner import Scanner
from peerfind.index import IndexWriter

__all__ = ["FILES", "bare_walk", "run"]

FILES = 100_000


def bare_walk(root: str) -> list[tuple[str, int, float]]:
    """The least a recursive walk that learns size and mtime can do."""
    found: list[tuple[str, int, float]] = []
    add = found.append
    stack = [root]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                else:
                    st = entry.stat(follow_symlinks=False)
                    add((entry.path, st.st_size, st.st_mtime))
    return found


def _time(fn: object) -> float:
    started = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - started


def run(ctx: Context) -> list[Result]:
    root = ctx.scratch("scan")
    tree = root / "tree"
    runs = 3 if ctx.quick else 7
    started = time.perf_counter()
    make_tree(tree, FILES)
    ctx.log(f"made {FILES:,} files in {time.perf_counter() - started:.1f} s")
    try:
        scanner = Scanner(tree)
        walked = bare_walk(str(tree))
        scanned = scanner.scan()
        if len(walked) != FILES or len(scanned.entries) != FILES:
            raise RuntimeError(f"walk found {len(walked)}, scanner {len(scanned.entries)}")
        bare, ours = [], []
        for _ in range(runs):
            ctx.quiet()
            bare.append(_time(lambda: bare_walk(str(tree))))
            ctx.quiet()
            ours.append(_time(scanner.scan))
        writer = IndexWriter(root / "index.sqlite3")
        try:
            write_s = _time(lambda: writer.replace_all(scanned.entries))
        finally:
            writer.close()
        ctx.log(
            f"scan of {FILES:,} files: scanner {min(ours):.3f} s, bare walk {min(bare):.3f} s; "
            f"index write {write_s:.2f} s"
        )
    finally:
        shutil.rmtree(tree, ignore_errors=True)
    return [
        Result.relative(
            "index.scan_100k",
            min(ours),
            "s",
            "bare recursive os.scandir + stat walk of the same tree",
            min(bare),
            at_most=1.5,
            context={
                "what": f"Scanner.scan() of {FILES:,} files (100 folders), warm caches, "
                f"best of {runs}",
                "scanner_s": ours,
                "bare_walk_s": bare,
                "index_write_s": write_s,
            },
        )
    ]
