"""Polling with a deadline, and the TCP probes the harness polls with."""

from __future__ import annotations

import asyncio
import inspect
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["DEFAULT_DEADLINE_S", "accepts", "eventually", "free_port", "wait_for"]

DEFAULT_DEADLINE_S = 30.0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def accepts(host: str, port: int) -> bool:
    """True if something accepts TCP connections on host:port right now."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _timed_out(deadline_s: float, what: str, last_error: Exception | None) -> TimeoutError:
    hint = f" (last error: {last_error})" if last_error else ""
    return TimeoutError(f"timed out after {deadline_s:g} s waiting for {what}{hint}")


def wait_for(
    condition: Callable[[], Any],
    deadline_s: float = DEFAULT_DEADLINE_S,
    step_s: float = 0.05,
    what: str = "condition",
) -> Any:
    """Poll `condition` until it returns a truthy value; TimeoutError after the deadline."""
    end = time.monotonic() + deadline_s
    last_error: Exception | None = None
    while True:
        try:
            value = condition()
            if value:
                return value
        except Exception as exc:  # polled conditions may fail until ready
            last_error = exc
        if time.monotonic() >= end:
            raise _timed_out(deadline_s, what, last_error)
        time.sleep(step_s)


async def eventually(
    condition: Callable[[], Any | Awaitable[Any]],
    deadline_s: float = DEFAULT_DEADLINE_S,
    step_s: float = 0.02,
    what: str = "condition",
) -> Any:
    """`wait_for` inside an event loop: `condition` may be a plain or an async function."""
    end = time.monotonic() + deadline_s
    last_error: Exception | None = None
    while True:
        try:
            value = condition()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
        except Exception as exc:  # polled conditions may fail until ready
            last_error = exc
        if time.monotonic() >= end:
            raise _timed_out(deadline_s, what, last_error)
        await asyncio.sleep(step_s)
