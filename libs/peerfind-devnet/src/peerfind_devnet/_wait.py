"""Polling with a deadline, and the TCP probes the harness polls with."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

__all__ = ["DEFAULT_DEADLINE_S", "accepts", "free_port", "wait_for"]

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
            hint = f" (last error: {last_error})" if last_error else ""
            raise TimeoutError(f"timed out after {deadline_s:.0f} s waiting for {what}{hint}")
        time.sleep(step_s)
