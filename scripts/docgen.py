"""The one command line of our generated docs: write the generated regions, or check them.

    python scripts/gen_api_doc.py [--check]
    python scripts/gen_config_doc.py [--check]

A generator gives `main` its document and a function from the document's text to the
text with its regions regenerated (ValueError when a region's markers are missing).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["main", "replace_region"]

ROOT = Path(__file__).resolve().parent.parent


def replace_region(text: str, begin: str, end: str, body: str) -> str:
    """`text` with what lies between the `begin` and `end` lines replaced by `body`."""
    start, stop = text.find(begin), text.find(end)
    if start < 0 or stop < start:
        raise ValueError(f"markers are missing: {begin} ... {end}")
    return f"{text[:start]}{begin}\n{body}\n{text[stop:]}"


def main(
    doc: Path,
    regenerate: Callable[[str], str],
    *,
    description: str,
    generator: str,
    argv: Sequence[str] | None = None,
) -> int:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--check", action="store_true", help=f"exit 1 if {doc.name} drifted")
    args = parser.parse_args(argv)
    name = doc.relative_to(ROOT)
    current = doc.read_text()
    try:
        fresh = regenerate(current)
    except ValueError as exc:
        print(f"{name}: {exc}")
        return 1
    if args.check:
        if fresh != current:
            print(
                f"{name}: the generated reference drifted from the code; run `python {generator}`"
            )
            return 1
        print(f"{name} is up to date")
        return 0
    if fresh != current:
        doc.write_text(fresh)
        print(f"wrote {name}")
    else:
        print(f"{name} is up to date")
    return 0
