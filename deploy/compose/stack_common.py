"""What scripts/stack.py and its Podman fallback (podman_fallback.py) share.

One-line errors (`StackError`), progress lines (`say`), commands run with a timeout
(`run`) and one poll with a deadline (`wait_until`). Standard library only, so that
`make down` works even from a broken venv.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["PROJECT", "ROOT", "StackError", "run", "say", "wait_until"]

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "peerfind"


class StackError(Exception):
    """A one-line reason the stack cannot be driven; printed without a traceback."""


def say(message: str) -> None:
    print(f"stack: {message}", file=sys.stderr, flush=True)


def run(
    cmd: Sequence[str | Path],
    *,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
    capture: bool = True,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run `cmd`; a missing command, a timeout and (with `check`) a failure are StackErrors."""
    try:
        result = subprocess.run(
            [str(c) for c in cmd],
            env=env,
            timeout=timeout,
            text=True,
            capture_output=capture,
            check=False,
        )
    except FileNotFoundError:
        raise StackError(f"{cmd[0]}: command not found") from None
    except subprocess.TimeoutExpired:
        what = " ".join(map(str, cmd[:2]))
        raise StackError(f"{what}: no answer in {timeout:.0f} s") from None
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout or "").strip().splitlines()
        last = detail[-1] if detail else f"exit code {result.returncode}"
        raise StackError(f"{' '.join(map(str, cmd[:3]))}: {last}")
    return result


def wait_until(done: Callable[[], bool], timeout_s: float, interval_s: float) -> bool:
    """Ask `done` every `interval_s` seconds: True once it answers True, False when
    `timeout_s` seconds passed first. `done` may raise to give up early."""
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval_s)
    return True
