"""Routing summaries between real peers: a neighbour's `GET /summary` over HTTP (the
`SummaryBook`'s fetch), and the loop that keeps our own summary current and theirs fresh.

Every `summary_refresh_s` the loop rebuilds our own filter when the index changed (its
file count or `last_change_at` moved), then asks each neighbour again with the ETag it
last sent (`If-None-Match`): an unchanged summary costs a 304 and no body. Reading every
name of a large index and hashing its trigrams takes most of a second for 100,000 names,
so both run on a worker thread; the book itself is only ever touched on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pydantic import ValidationError

from directory.auth import PeerAuth
from directory.peers import Peer
from directory.summary import Bloom, SummaryBook, SummaryRefused
from directory.transport import AnswerTooLarge, PeerCallError, PeerHttp
from peerfind.api import SummaryDoc
from peerfind.errors import short_error
from peerfind.index import IndexReader

__all__ = [
    "NAMES_PAGE",
    "SUMMARY_MAX_BYTES",
    "SummaryFetcher",
    "SummaryUpkeep",
    "etag_matches",
    "etag_of",
    "index_names",
]

logger = logging.getLogger(__name__)

SUMMARY_MAX_BYTES = 400_000
"""The cap on a neighbour's summary: two filters of summary.MAX_BITS in base64 (~350 kB)
and their JSON fit; anything larger is refused unread."""
NAMES_PAGE = 5000
"""Names read from the index per query while rebuilding our own filter."""


def etag_of(version: str) -> str:
    """The ETag of a summary version (a strong validator: quoted)."""
    return f'"{version}"'


def etag_matches(if_none_match: str | None, version: str) -> bool:
    """Whether an If-None-Match header names `version` (RFC 9110: a list of tags, `*`, and
    the weak comparison, so `W/"v"` matches too)."""
    if not if_none_match:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in tags or etag_of(version) in tags


class SummaryFetcher:
    """The book's fetch: GET a neighbour's /summary, conditionally; None when unchanged.

    What we do not accept (an answer over `max_bytes`, or one that is not a SummaryDoc)
    raises SummaryRefused; an unreachable peer or an error status raises PeerCallError.
    """

    def __init__(self, http: PeerHttp, auth: PeerAuth, *, max_bytes: int = SUMMARY_MAX_BYTES):
        self.http = http
        self.auth = auth
        self.max_bytes = max_bytes

    async def __call__(self, peer: Peer, etag: str | None) -> SummaryDoc | None:
        headers = dict(self.auth.headers)
        if etag:
            headers["If-None-Match"] = etag_of(etag)
        try:
            answer = await self.http.call(
                "GET", f"{peer.url}/summary", headers=headers, max_bytes=self.max_bytes
            )
        except AnswerTooLarge as exc:
            raise SummaryRefused(str(exc)) from None
        if answer.status == 304:
            return None
        if answer.status != 200:
            raise PeerCallError(f"HTTP {answer.status}")
        try:
            return SummaryDoc.model_validate_json(answer.body)
        except ValidationError as exc:
            raise SummaryRefused(f"not a summary ({exc.error_count()} errors)") from None


def index_names(reader: IndexReader, page: int = NAMES_PAGE) -> list[str]:
    """Every file name in the index, read in pages (blocking: call on a thread)."""
    names: list[str] = []
    after = ""
    while entries := reader.list(page, after):
        names.extend(entry.name for entry in entries)
        if len(entries) < page:
            break
        after = entries[-1].path
    return names


@dataclass(frozen=True, slots=True)
class _IndexMark:
    """What tells us the index changed since our filter was built."""

    available: bool
    files: int
    last_change_at: float


class SummaryUpkeep:
    """Keeps `book` current: our own filter from `reader`, the neighbours' from the peers
    `neighbours()` names, every `interval_s`. Errors are logged; the loop goes on."""

    def __init__(
        self,
        book: SummaryBook,
        reader: IndexReader,
        neighbours: Callable[[], Iterable[Peer]],
        *,
        interval_s: float,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.book = book
        self.reader = reader
        self.neighbours = neighbours
        self.interval_s = interval_s
        self._clock = clock
        self._mark: _IndexMark | None = None

    @property
    def ready(self) -> bool:
        """Our own filter has been built from the index at least once: until then the book
        holds an empty one, which would tell neighbours we hold nothing."""
        return self._mark is not None

    async def run(self) -> None:
        while True:
            try:
                await self.step()
            except Exception as exc:
                logger.warning("summary upkeep failed: %s", short_error(exc))
            await asyncio.sleep(self.interval_s)

    async def step(self) -> None:
        try:
            await self.rebuild()
        except Exception as exc:  # the old filter stays; the neighbours' are still due
            logger.warning("own summary not rebuilt: %s", short_error(exc))
        await self.book.refresh(self.neighbours())

    async def rebuild(self) -> bool:
        """Rebuild our own filter if the index changed; True if it was rebuilt."""
        built = await asyncio.to_thread(self._build, self._mark)
        if built is None:
            return False
        mark, own, seconds = built
        self.book.set_own(own, seconds)
        self._mark = mark
        return True

    def _build(self, last: _IndexMark | None) -> tuple[_IndexMark, Bloom, float] | None:
        # On a worker thread. The mark is read first: a change while the names are read
        # moves it again, and the next round builds once more.
        stats = self.reader.stats()
        mark = _IndexMark(stats.available, stats.files, stats.last_change_at)
        if mark == last:
            return None
        started = self._clock()
        own = Bloom.of(index_names(self.reader))
        return mark, own, self._clock() - started
