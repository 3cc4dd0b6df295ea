"""Routing summaries: what a neighbour may hold, in a few kilobytes.

Each peer publishes a Bloom filter of the trigrams of its (case-folded) file names: a
substring query of 3 or more characters can only match a name that holds every one of the
query's trigrams, so a filter that lacks one of them proves the peer has no match (no
false negatives; a false positive costs one wasted forward). Shorter queries match
everywhere. Beside its own filter a peer publishes a merged one, its own OR'ed with its
neighbours' own, as Gnutella's ultrapeers merge their leaves' QRP tables: a neighbour's
merged filter says whether the file may be within two hops through it.

The filter is ours, not rbloom's: rbloom hashes with Python's `hash`, which is salted per
process, so its bytes mean nothing to another peer. Ours: m bits (a power of two between
MIN_BITS and MAX_BITS), k probes by double hashing of one 64-bit BLAKE2b of the trigram,
little-endian bytes. Powers of two make filters of different sizes comparable: a filter
of m bits tiled to M bits (m divides M) answers every probe as the original does, so the
merged filter is the OR of its inputs tiled to the largest.

A filter more than SATURATED_FILL full claims nearly everything. It still counts as "may
match" for its own peer (a liar or a huge share attracts queries to itself) but it is
never merged into ours and never steers a walk: it cannot pull queries through us.

Framework-free: `SummaryBook` takes its fetch function and clock; the directory fetches
over HTTP with ETags (`GET /summary`), the simulator over its virtual network.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from directory.peers import Peer
from peerfind.api import BloomDoc, SummaryDoc
from peerfind.errors import short_error
from peerfind.index import fold_name

__all__ = [
    "BITS_PER_GRAM",
    "GRAM",
    "HASHES",
    "MAX_BITS",
    "MIN_BITS",
    "SATURATED_FILL",
    "Bloom",
    "QueryMatch",
    "SummaryBook",
    "SummaryEvents",
    "SummaryFetch",
    "SummaryRefused",
    "Verdict",
    "grams",
    "query_probes",
]

logger = logging.getLogger(__name__)

GRAM = 3
MIN_BITS = 1 << 13  # 1 KiB
MAX_BITS = 1 << 20  # 128 KiB: a share of ~100,000 distinct trigrams at ~2% false positives
BITS_PER_GRAM = 10
HASHES = 4
SATURATED_FILL = 0.5

Verdict = Literal["match", "miss", "unknown"]


class SummaryRefused(ValueError):
    """A summary that does not decode to a filter we accept (malformed or oversized)."""


def grams(text: str) -> set[str]:
    folded = fold_name(text)
    return {folded[i : i + GRAM] for i in range(len(folded) - GRAM + 1)}


def _hash(gram: str) -> int:
    return int.from_bytes(hashlib.blake2b(gram.encode(), digest_size=8).digest(), "little")


def query_probes(query: str) -> tuple[int, ...] | None:
    """The hashes a query is checked with; None when it is too short to rule anything out."""
    found = grams(query)
    if not found:
        return None
    return tuple(_hash(g) for g in sorted(found))


@dataclass(frozen=True, slots=True)
class Bloom:
    bits: int  # m, a power of two
    hashes: int  # k
    data: bytes  # m / 8 bytes, bit i of the filter is data[i >> 3] >> (i & 7) & 1

    @classmethod
    def of(cls, items: Iterable[str], *, bits: int | None = None, hashes: int = HASHES) -> Bloom:
        """The filter of the trigrams of `items`, sized to them unless `bits` is given."""
        found: set[str] = set()
        for item in items:
            found |= grams(item)
        if bits is None:
            bits = MIN_BITS
            while bits < len(found) * BITS_PER_GRAM and bits < MAX_BITS:
                bits <<= 1
        buf = bytearray(bits // 8)
        mask = bits - 1
        for gram in found:
            h = _hash(gram)
            h1, h2 = h & 0xFFFFFFFF, (h >> 32) | 1
            for i in range(hashes):
                p = (h1 + i * h2) & mask
                buf[p >> 3] |= 1 << (p & 7)
        return cls(bits, hashes, bytes(buf))

    def may_contain(self, probes: tuple[int, ...]) -> bool:
        data, mask, k = self.data, self.bits - 1, self.hashes
        for h in probes:
            h1, h2 = h & 0xFFFFFFFF, (h >> 32) | 1
            for i in range(k):
                p = (h1 + i * h2) & mask
                if not data[p >> 3] >> (p & 7) & 1:
                    return False
        return True

    @property
    def fill(self) -> float:
        return int.from_bytes(self.data, "little").bit_count() / self.bits

    @property
    def saturated(self) -> bool:
        return self.fill > SATURATED_FILL

    def tiled(self, bits: int) -> bytes:
        """This filter's bytes repeated to `bits` bits (a multiple of ours)."""
        return self.data * (bits // self.bits)

    @classmethod
    def union(cls, filters: list[Bloom]) -> Bloom:
        """One filter that may contain whatever any of `filters` may (same k)."""
        size = max(f.bits for f in filters)
        total = 0
        for f in filters:
            total |= int.from_bytes(f.tiled(size), "little")
        return cls(size, filters[0].hashes, total.to_bytes(size // 8, "little"))

    def doc(self) -> BloomDoc:
        return BloomDoc(
            bits=self.bits, hashes=self.hashes, data=base64.b64encode(self.data).decode()
        )

    @classmethod
    def from_doc(cls, doc: BloomDoc) -> Bloom:
        """The filter a neighbour sent; SummaryRefused when it is not one we accept."""
        bits = doc.bits
        if bits & (bits - 1) or not MIN_BITS <= bits <= MAX_BITS:
            raise SummaryRefused(f"filter of {bits} bits: not a power of two in range")
        try:
            data = base64.b64decode(doc.data, validate=True)
        except ValueError:
            raise SummaryRefused("filter data is not base64") from None
        if len(data) != bits // 8:
            raise SummaryRefused(f"filter data is {len(data)} bytes, not {bits // 8}")
        return cls(bits, doc.hashes, data)


class QueryMatch:
    """One query checked against the summaries we hold, neighbour by neighbour."""

    def __init__(self, book: SummaryBook | None, query: str) -> None:
        self._book = book
        self._probes = query_probes(query) if book is not None else None

    def _check(self, peer_id: str, merged: bool) -> Verdict:
        if self._probes is None or self._book is None:
            return "unknown"
        held = self._book.neighbours.get(peer_id)
        if held is None:
            return "unknown"
        bloom = held.merged if merged else held.own
        if bloom.saturated:
            return "unknown"
        return "match" if bloom.may_contain(self._probes) else "miss"

    def holds(self, peer_id: str) -> Verdict:
        """May `peer_id` itself hold a match?"""
        return self._check(peer_id, merged=False)

    def near(self, peer_id: str) -> Verdict:
        """May `peer_id` or one of its neighbours hold a match?"""
        return self._check(peer_id, merged=True)


@dataclass(frozen=True, slots=True)
class _Held:
    etag: str
    own: Bloom
    merged: Bloom


class SummaryEvents:
    """What a book reports; the directory counts it in Prometheus."""

    def fetched(self, outcome: str) -> None:
        """outcome: "changed", "unchanged", "refused", "failed"."""

    def rebuilt(self, seconds: float, bits: int) -> None:
        pass


SummaryFetch = Callable[[Peer, str | None], Coroutine[Any, Any, SummaryDoc | None]]
"""GET a neighbour's summary, sending its last ETag: the document, or None when unchanged."""


class SummaryBook:
    """Our own summary, and the ones our neighbours published."""

    def __init__(
        self,
        peer_id: str,
        fetch: SummaryFetch,
        *,
        events: SummaryEvents | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.peer_id = peer_id
        self.fetch = fetch
        self.events = events or SummaryEvents()
        self._clock = clock
        self.own = Bloom.of(())
        self.merged = self.own
        self.version = ""
        self.neighbours: dict[str, _Held] = {}
        self._document: SummaryDoc | None = None
        self._publish()

    def match(self, query: str) -> QueryMatch:
        return QueryMatch(self, query)

    def set_names(self, names: Iterable[str]) -> None:
        """Rebuild our own filter from the names we share now."""
        started = self._clock()
        own = Bloom.of(names)
        self.set_own(own, self._clock() - started)

    def set_own(self, own: Bloom, seconds: float) -> None:
        """Take our own filter built elsewhere (`Bloom.of` of a large share is best built
        on a worker thread), `seconds` being what building it took."""
        self.own = own
        self.events.rebuilt(seconds, own.bits)
        self._publish()

    def _publish(self) -> None:
        parts = [self.own] + [h.own for h in self.neighbours.values() if not h.own.saturated]
        self.merged = Bloom.union(parts) if len(parts) > 1 else self.own
        digest = hashlib.blake2b(digest_size=8)
        digest.update(self.own.data)
        digest.update(self.merged.data)
        version = digest.hexdigest()
        if version != self.version:
            self.version = version
            self._document = None

    def document(self) -> SummaryDoc:
        """What `GET /summary` answers (built once per version)."""
        if self._document is None:
            self._document = SummaryDoc(
                peer_id=self.peer_id,
                version=self.version,
                own=self.own.doc(),
                merged=self.merged.doc(),
            )
        return self._document

    async def refresh(self, peers: Iterable[Peer]) -> None:
        """Fetch every neighbour's summary (conditionally) and forget former neighbours'.

        A neighbour that fails or sends something we refuse has no summary until its next
        good answer: "may match", never a wrong "miss".
        """
        current = {p.peer_id: p for p in peers}
        for gone in self.neighbours.keys() - current.keys():
            del self.neighbours[gone]
        for peer_id, peer in current.items():
            held = self.neighbours.get(peer_id)
            try:
                doc = await self.fetch(peer, held.etag if held else None)
                if doc is None:
                    if held is None:
                        raise SummaryRefused("not modified, but we hold nothing")
                    self.events.fetched("unchanged")
                    continue
                if doc.peer_id != peer_id:
                    raise SummaryRefused(f"summary names {doc.peer_id!r}, not {peer_id!r}")
                if doc.own.hashes != doc.merged.hashes:
                    raise SummaryRefused("own and merged filters probe differently")
                self.neighbours[peer_id] = _Held(
                    doc.version, Bloom.from_doc(doc.own), Bloom.from_doc(doc.merged)
                )
                self.events.fetched("changed")
            except SummaryRefused as exc:
                self.neighbours.pop(peer_id, None)
                self.events.fetched("refused")
                logger.warning("summary of %s refused: %s", peer_id, exc)
            except Exception as exc:  # a neighbour down or slow: no summary, "may match"
                self.neighbours.pop(peer_id, None)
                self.events.fetched("failed")
                logger.info("summary of %s not fetched: %s", peer_id, short_error(exc))
        self._publish()
