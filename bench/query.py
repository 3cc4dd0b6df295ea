"""Substring query on a 1,000,000-file index, against a list comprehension in memory.

The index is the one `bench.memory` made from its 1M-file tree (or, when that did
not run, one written straight from the same names with `IndexWriter`). Ours is
`IndexReader.search(query, max_results + 1)`, exactly the directory's local
search; the baseline is `[n for n in names if q in n]` over the same names held
in a Python list. Two queries: a selective one (one name matches) and a common
one (`.txt`, 10% of the names, so ours stops at the result limit).
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.core import Context, Result
from bench.tree import names
from peerfind.config import PeerSettings
from peerfind.index import FileEntry, IndexReader, IndexWriter

__all__ = ["run"]

FILES = 1_000_000
SELECTIVE = "0424242"
COMMON = ".txt"
LIMIT = PeerSettings.model_fields["max_results"].default + 1


def _best(fn: Callable[[], object], runs: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times), times


def _loop(in_memory: list[str], query: str) -> list[str]:
    return [n for n in in_memory if query in n]


def _index(ctx: Context) -> tuple[Path, int]:
    made = ctx.shared.get("million_index")
    if made is not None and Path(made[0]).exists():
        return Path(made[0]), int(made[1])
    count = 100_000 if ctx.quick else FILES
    path = ctx.scratch("query") / "index.sqlite3"
    started = time.perf_counter()
    writer = IndexWriter(path)
    try:
        writer.replace_all(
            FileEntry(f"d{i // 1000:04d}/{n}", n, 0, 0.0) for i, n in enumerate(names(count))
        )
    finally:
        writer.close()
    ctx.log(f"wrote a {count:,}-name index in {time.perf_counter() - started:.1f} s")
    return path, count


def run(ctx: Context) -> list[Result]:
    path, count = _index(ctx)
    reader = IndexReader(path)
    in_memory = list(names(count))
    runs_loop, runs_ours = (3, 10) if ctx.quick else (7, 30)
    results: list[Result] = []
    for label, query, at_most, aim in (
        ("selective", SELECTIVE, 0.05, "<= 0.05x (>= 20x faster)"),
        ("common", COMMON, 1.0, "<= 1x (no slower)"),
    ):
        found = reader.search(query, LIMIT)  # warm the page cache and the connection
        expected = sum(query in n for n in in_memory)
        ctx.quiet()
        ours, ours_all = _best(functools.partial(reader.search, query, LIMIT), runs_ours)
        ctx.quiet()
        loop, loop_all = _best(functools.partial(_loop, in_memory, query), runs_loop)
        ctx.log(
            f"query {label} {query!r}: index {ours * 1000:.2f} ms ({len(found)} hits), "
            f"loop {loop * 1000:.1f} ms ({expected} matches)"
        )
        context: dict[str, Any] = {
            "what": f"{query!r} in {count:,} names, limit {LIMIT}; best of {runs_ours} / "
            f"{runs_loop} runs",
            "hits_returned": len(found),
            "names_matching": expected,
            "index_median_ms": statistics.median(ours_all) * 1000,
            "loop_median_ms": statistics.median(loop_all) * 1000,
        }
        results.append(
            Result.relative(
                f"query.{label}_1m",
                ours * 1000,
                "ms",
                "Python list comprehension over the same names in memory",
                loop * 1000,
                at_most=at_most,
                aim=aim,
                context=context,
            )
        )
    return results
