"""`python -m bench`: run the benchmark families, print a table, write latest.json / .png.

    python -m bench                     # everything (what `make bench` runs)
    python -m bench --quick             # lighter runs of everything
    python -m bench --only transfer --only scan
    python -m bench --only footprint       # memory per peer (about 80 s)
    python -m bench --only realfiles       # Download, nginx, peerfind get, hashing
    python -m bench --list

A `--only` or `--quick` run writes `bench/results/partial.json` (and .png) and
leaves latest.json, the record of the last full run, alone, unless `--out` says
otherwise. The exit code is 0 even when an aim is missed (the table says so);
it is 1 only when a benchmark failed to run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from bench.core import Context, Result, machine_facts

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# In the order they run: the 1M-file families share one tree, memory builds it.
FAMILIES = {
    "transfer": "bench.transfer",
    "realfiles": "bench.realfiles",
    "search": "bench.search",
    "scan": "bench.scan",
    "freshness": "bench.freshness",
    "memory": "bench.memory",
    "query": "bench.query",
    "footprint": "bench.footprint",
    "overlay": "bench.overlay",
}


def scratch_base() -> str | None:
    """Where the scratch folder goes: $BENCH_TMPDIR, else /dev/shm, else the default.

    The benchmarks make up to a million files; on tmpfs that takes seconds and does
    not depend on what else the disk is doing (on this machine kind, /tmp on the
    shared disk was seen to create files a hundred times slower at busy times).
    """
    chosen = os.environ.get("BENCH_TMPDIR")
    if chosen:
        return chosen
    shm = Path("/dev/shm")  # noqa: S108 (mkdtemp makes a private 0700 folder in it)
    if shm.is_dir() and os.access(shm, os.W_OK):
        stats = os.statvfs(shm)
        if stats.f_bavail * stats.f_frsize > 4 * 1024**3 and stats.f_favail > 2_500_000:
            return str(shm)
    return None


def _format_value(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def table(results: list[Result]) -> str:
    rows = [("benchmark", "value", "unit", "baseline", "ratio", "aim", "met")]
    for r in results:
        rows.append(
            (
                r.name,
                _format_value(r.value),
                r.unit,
                _format_value(r.baseline_value),
                "-" if r.ratio is None else f"{r.ratio:.3g}x",
                r.aim,
                "-" if r.met is None else "yes" if r.met else "NO",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [
            c.rjust(w) if 0 < i < 5 else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _met(met: bool | None) -> str:
    return "-" if met is None else "yes" if met else "**no**"


def markdown(document: dict[str, Any]) -> str:
    """The results table of a latest.json document, as Markdown."""
    lines = [
        "| benchmark | value | baseline (same run) | baseline value | ratio | aim | met |",
        "| --- | ---: | --- | ---: | ---: | --- | --- |",
    ]
    for b in document["benchmarks"]:
        ratio = "-" if b["ratio"] is None else f"{b['ratio']:.3g}x"
        lines.append(
            f"| `{b['name']}` | {_format_value(b['value'])} {b['unit']} | {b['baseline']} | "
            f"{_format_value(b['baseline_value'])} | {ratio} | {b['aim']} | "
            f"{_met(b['met'])} |"
        )
    return "\n".join(lines)


def write_results(
    path: Path, results: list[Result], *, wall_s: float, argv: list[str], failed: list[str]
) -> None:
    document: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": " ".join(["python -m bench", *argv]).strip(),
        "wall_s": round(wall_s, 1),
        "machine": machine_facts(),
        "failed": failed,
        "benchmarks": [r.as_json() for r in results],
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(document, indent=2) + "\n")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="lighter runs, for iteration")
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(FAMILIES),
        metavar="FAMILY",
        help=f"run only this family ({', '.join(FAMILIES)}); repeatable",
    )
    parser.add_argument("--list", action="store_true", help="list the families and exit")
    parser.add_argument("--out", type=Path, help="results file (default: see above)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument(
        "--markdown",
        type=Path,
        metavar="JSON",
        help="print the table of a results file as Markdown (for docs/benchmarks.md) and exit",
    )
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    if args.markdown:
        print(markdown(json.loads(args.markdown.read_text())))
        return 0
    if args.list:
        for name, module in FAMILIES.items():
            doc = (importlib.import_module(module).__doc__ or "").strip().splitlines()[0]
            print(f"{name:10} {doc}")
        return 0
    selected = [n for n in FAMILIES if not args.only or n in args.only]
    full = not args.only and not args.quick
    out = args.out or RESULTS_DIR / ("latest.json" if full else "partial.json")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)

    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="peerfind-bench-", dir=scratch_base()))
    ctx = Context(tmp=tmp, quick=args.quick)
    results: list[Result] = []
    failed: list[str] = []
    ctx.log(f"benchmarks: {', '.join(selected)}{' (quick)' if args.quick else ''}; scratch {tmp}")
    try:
        for name in selected:
            ctx.log(f"== {name}")
            try:
                family = importlib.import_module(FAMILIES[name])
                results.extend(family.run(ctx))
            except Exception:
                traceback.print_exc()
                failed.append(name)
                ctx.log(f"{name} FAILED (see the traceback above)")
    finally:
        ctx.close()
        if args.keep:
            ctx.log(f"scratch kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    wall = time.monotonic() - started

    print()
    print(table(results))
    print(
        f"\n{len(results)} results, {sum(r.missed for r in results)} aims missed, "
        f"{len(failed)} families failed; wall time {wall:.0f} s"
    )
    write_results(out, results, wall_s=wall, argv=argv, failed=failed)
    chart_path = out.with_suffix(".png")
    try:
        from bench.chart import draw

        draw(results, chart_path, title=f"peerfind benchmarks, {dt.date.today().isoformat()}")
    except Exception:
        traceback.print_exc()
        print("chart failed; the JSON is written", file=sys.stderr)
    print(
        f"wrote {out.relative_to(Path.cwd()) if out.is_relative_to(Path.cwd()) else out} "
        f"and {chart_path.name}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
