"""What every benchmark family shares: results, the run context, helper processes, timing.

A family is a module with `run(ctx: Context) -> list[Result]`. It starts what it
needs on 127.0.0.x (real peers through `peerfind_devnet`, baselines through
`Helpers`), stops all of it before it returns, and measures each figure against
a baseline taken in the same run, so that the ratio, not the absolute time, is
what a result says.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from peerfind_devnet import PERF_ENV, REPO_ROOT, accepts, free_port, wait_for

__all__ = [
    "MB",
    "MIB",
    "PERF_ENV",
    "REPO_ROOT",
    "Context",
    "Helpers",
    "Result",
    "free_port",
    "machine_facts",
    "percentile",
    "wait_for",
    "wait_tcp",
]

MIB = 1024 * 1024
MB = 1_000_000
PY = sys.executable


@dataclass
class Result:
    """One benchmark figure, its same-run baseline and whether it meets the aim.

    `ratio` is value / baseline_value (None without a baseline). `aim` is the issue's
    aim as text; `margin` is how far past it the figure is (>= 1 means met, whichever
    way is better). `context` holds absolute figures and curves for the docs and
    the chart. Build one with `Result.relative`, `Result.absolute` or
    `Result.context_only` (a ratio reported with no aim: `met` is None, read "-").
    """

    name: str
    value: float
    unit: str
    baseline: str
    baseline_value: float | None
    aim: str
    met: bool | None
    ratio: float | None
    margin: float
    context: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def relative(
        cls,
        name: str,
        value: float,
        unit: str,
        baseline: str,
        baseline_value: float,
        *,
        at_least: float | None = None,
        at_most: float | None = None,
        aim: str = "",
        ratio: float | None = None,
        context: dict[str, Any] | None = None,
    ) -> Result:
        """An aim on the ratio: `at_least` (higher is better) or `at_most` (lower is).

        The ratio is value / baseline_value unless `ratio` is given (the median of
        per-pair ratios, say, which value and baseline_value cannot express)."""
        if ratio is None:
            ratio = value / baseline_value if baseline_value else math.inf
        if at_least is not None:
            margin = ratio / at_least
            aim = aim or f">= {at_least:g}x"
        elif at_most is not None:
            margin = at_most / ratio if ratio else math.inf
            aim = aim or f"<= {at_most:g}x"
        else:
            raise ValueError("relative() needs at_least or at_most")
        return cls(
            name,
            value,
            unit,
            baseline,
            baseline_value,
            aim,
            margin >= 1,
            ratio,
            margin,
            context or {},
        )

    @classmethod
    def absolute(
        cls,
        name: str,
        value: float,
        unit: str,
        *,
        below: float,
        aim: str,
        baseline: str = "none (absolute)",
        baseline_value: float | None = None,
        context: dict[str, Any] | None = None,
    ) -> Result:
        """An aim on the figure itself: `value` under `below`; a baseline is context."""
        ratio = value / baseline_value if baseline_value else None
        margin = below / value if value else math.inf
        return cls(
            name,
            value,
            unit,
            baseline,
            baseline_value,
            aim,
            value < below,
            ratio,
            margin,
            context or {},
        )

    @classmethod
    def context_only(
        cls,
        name: str,
        value: float,
        unit: str,
        baseline: str,
        baseline_value: float,
        *,
        why: str,
        ratio: float | None = None,
        context: dict[str, Any] | None = None,
    ) -> Result:
        """A ratio that is reported, not judged: no aim the code could miss for its own
        reason (`why` says what sets the figure instead). `ratio` as in `relative`."""
        if ratio is None:
            ratio = value / baseline_value if baseline_value else math.inf
        return cls(
            name,
            value,
            unit,
            baseline,
            baseline_value,
            f"none ({why})",
            None,
            ratio,
            math.nan,
            context or {},
        )

    @property
    def missed(self) -> bool:
        """An aim that was not met (a context figure never is)."""
        return self.met is False

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": _round(self.value),
            "unit": self.unit,
            "baseline": self.baseline,
            "baseline_value": _round(self.baseline_value),
            "ratio": _round(self.ratio, 3),
            "aim": self.aim,
            "met": None if self.met is None else bool(self.met),
            "margin": _round(self.margin, 3),
            "context": _rounded(self.context),
        }


def _round(value: float | None, digits: int = 4) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    if value == 0:
        return 0.0
    # Significant digits, not decimals: 0.000123 s and 2071.4 MB/s both stay readable.
    return round(value, max(0, digits - 1 - math.floor(math.log10(abs(value)))))


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return _round(value, 5)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v) for v in value]
    return value


def percentile(values: Sequence[float], pct: float) -> float:
    """The `pct` percentile (0-100) by linear interpolation between closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def wait_tcp(host: str, port: int, deadline_s: float = 30.0, what: str = "") -> None:
    """Until something accepts TCP connections on host:port."""
    wait_for(
        lambda: accepts(host, port),
        deadline_s,
        step_s=0.02,
        what=what or f"{host}:{port} to listen",
    )


def _cpu_counters() -> tuple[float, float]:
    """(busy, total) jiffies over every CPU since boot, from /proc/stat."""
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already inside user
    return total - idle, total


def busy_cores(window_s: float = 0.2) -> float:
    """How many CPUs' worth of work the machine did over the next `window_s` seconds."""
    busy0, total0 = _cpu_counters()
    time.sleep(window_s)
    busy1, total1 = _cpu_counters()
    if total1 <= total0:
        return 0.0
    return (busy1 - busy0) / (total1 - total0) * (os.cpu_count() or 1)


@dataclass
class Context:
    """One `python -m bench` run: options, a scratch folder, and a log."""

    tmp: Path
    quick: bool = False
    # Seconds the whole run may spend waiting for other work on the machine to pause.
    quiet_budget_s: float = 150.0
    quiet_waited_s: float = 0.0
    started: float = field(default_factory=time.monotonic)
    shared: dict[str, Any] = field(default_factory=dict)  # what one family leaves another
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    def log(self, message: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"[{elapsed:6.1f}s] {message}", file=sys.stderr, flush=True)

    def quiet(self, *, max_wait_s: float = 3.0, threshold: float = 0.35) -> float:
        """Before a timed run: wait (bounded) until the machine is nearly idle.

        The machine is shared; between two runs nothing of ours is busy, so the CPU
        in use is somebody else's. Waits while more than `threshold` CPUs are busy,
        at most `max_wait_s` here and `quiet_budget_s` over the whole run; returns
        the busy CPUs last seen (recorded with the results).
        """
        started = time.monotonic()
        while True:
            busy = busy_cores(0.15)
            waited = time.monotonic() - started
            if (
                busy <= threshold
                or waited >= max_wait_s
                or self.quiet_waited_s + waited >= self.quiet_budget_s
            ):
                self.quiet_waited_s += waited
                return busy

    def close(self) -> None:
        """Run the cleanups families registered (last first); never raises."""
        while self.cleanups:
            try:
                self.cleanups.pop()()
            except Exception as exc:
                self.log(f"cleanup failed: {exc}")

    def scratch(self, name: str) -> Path:
        path = self.tmp / name
        path.mkdir(parents=True, exist_ok=True)
        return path


class Helpers:
    """Benchmark helper processes (baseline servers, clients), always stopped on exit.

        with Helpers(ctx.scratch("logs")) as helpers:
            proc = helpers.start("bare-grpc", "bench.baselines", "grpc", "--port", "1234")

    Every process gets PERF_ENV, as the services do under devnet, so a baseline
    runs with exactly the process settings of the peer it is compared with.
    """

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def __enter__(self) -> Helpers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def env(self, **extra: str) -> dict[str, str]:
        path = os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]).strip(":")
        return {**os.environ, **PERF_ENV, "PYTHONPATH": path, **extra}

    def start(
        self, name: str, module: str, *args: str, pipe: bool = False, **env: str
    ) -> subprocess.Popen[bytes]:
        """`python -m module args` with PERF_ENV; stdin/stdout piped when `pipe`."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                [PY, "-m", module, *args],
                cwd=REPO_ROOT,
                env=self.env(**env),
                stdin=subprocess.PIPE if pipe else subprocess.DEVNULL,
                stdout=subprocess.PIPE if pipe else log,
                stderr=log,
                start_new_session=True,
            )
        self.procs[name] = proc
        return proc

    def log_tail(self, name: str, lines: int = 5) -> str:
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return ""
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])

    def stop(self, name: str, timeout_s: float = 10.0) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout_s)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def stop_all(self) -> None:
        for name in list(reversed(self.procs)):
            self.stop(name)


class Worker:
    """A helper process that runs one JSON command per line (see `bench.worker`)."""

    def __init__(self, helpers: Helpers, name: str) -> None:
        self.name = name
        self.helpers = helpers
        self.proc = helpers.start(name, "bench.worker", pipe=True)

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((json.dumps({"op": op, **args}) + "\n").encode())
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(
                f"worker {self.name} died during {op}: {self.helpers.log_tail(self.name)}"
            )
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"worker {self.name} failed {op}: {answer['error']}")
        return answer


def best_of(
    runs: int, measure: Callable[[], float], *, higher_is_better: bool = True
) -> tuple[float, list[float]]:
    """Run `measure` `runs` times; the best figure and all of them."""
    values = [measure() for _ in range(runs)]
    return (max(values) if higher_is_better else min(values)), values


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "absent"


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _mem_total_mb() -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return 0


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    commit = out.stdout.strip() or "unknown"
    return commit + ("+dirty" if dirty.stdout.strip() else "")


def machine_facts() -> dict[str, Any]:
    """What the figures were measured on (recorded once per run)."""
    return {
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "mem_total_mb": _mem_total_mb(),
        "kernel": platform.release(),
        "os": platform.platform(terse=True),
        "python": platform.python_version(),
        "libc": " ".join(platform.libc_ver()),
        "sqlite": sqlite3.sqlite_version,
        "grpcio": _version("grpcio"),
        "protobuf": _version("protobuf"),
        "httpx": _version("httpx"),
        "sniffio": _version("sniffio"),
        "fastapi": _version("fastapi"),
        "uvicorn": _version("uvicorn"),
        "uvloop": _version("uvloop"),
        "git": _git_commit(),
        "perf_env": dict(PERF_ENV),
    }


@contextlib.contextmanager
def timer() -> Iterator[Callable[[], float]]:
    """`with timer() as elapsed: ...; elapsed()` in seconds."""
    started = time.perf_counter()
    end: list[float] = []
    yield lambda: (end[0] if end else time.perf_counter()) - started
    end.append(time.perf_counter())
