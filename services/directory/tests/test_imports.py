"""What the directory's server process imports: what it never uses, it does not load.

Every module a service imports is resident in each peer's process for its whole life
(docs/benchmarks.md, "Memory per peer"). Checked in a fresh interpreter, since this
test process has imported everything already.
"""

from __future__ import annotations

import json
import subprocess
import sys


def _loaded_after(module: str, candidates: list[str]) -> list[str]:
    script = (
        "import importlib, json, sys\n"
        f"importlib.import_module({module!r})\n"
        f"print(json.dumps([m for m in {candidates!r} if m in sys.modules]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    loaded: list[str] = json.loads(done.stdout)
    return loaded


def test_the_server_does_not_import_httpx() -> None:
    # httpx is the healthcheck's (`--check`, a process of its own); with rich and
    # pygments installed (the CLI's), importing it also loads its command line's.
    assert _loaded_after("directory.main", ["httpx", "rich", "pygments"]) == []
