"""Routing summaries: the trigram Bloom filter, its wire form, and the book of neighbours'."""

from __future__ import annotations

import base64
import random

import pytest

from directory.peers import Peer
from directory.summary import (
    MAX_BITS,
    MIN_BITS,
    Bloom,
    QueryMatch,
    SummaryBook,
    SummaryRefused,
    query_probes,
)
from peerfind.api import BloomDoc, SummaryDoc

NAMES = ["hello1.txt", "Été-2026.jpg", "report_final.PDF", "ß-strasse.md"]


def _probes(query: str) -> tuple[int, ...]:
    probes = query_probes(query)
    assert probes is not None
    return probes


def test_every_substring_of_three_or_more_characters_may_match() -> None:
    rng = random.Random(5)
    names = [
        "".join(rng.choice("abcdefgh.-_ÉéßΣς") for _ in range(rng.randint(3, 30)))
        for _ in range(300)
    ]
    bloom = Bloom.of(names)
    for name in names:
        for start in range(len(name) - 2):
            for end in range(start + 3, len(name) + 1):
                assert bloom.may_contain(_probes(name[start:end])), name[start:end]


def test_case_folding_is_the_index_s() -> None:
    bloom = Bloom.of(NAMES)
    for query in ("HELLO", "été", "ÉTÉ-", "STRASSE", "ss-s", "pdf"):
        assert bloom.may_contain(_probes(query)), query


def test_absent_names_are_ruled_out_and_short_queries_are_not() -> None:
    bloom = Bloom.of(NAMES)
    assert not bloom.may_contain(_probes("zebra"))
    assert not bloom.may_contain(_probes("hello2"))  # "lo2" is in no name
    assert query_probes("he") is None  # too short to rule anything out


def test_the_filter_grows_with_the_share_and_stays_bounded() -> None:
    assert Bloom.of([]).bits == MIN_BITS
    big = Bloom.of(f"{i:07d}-{i * 7919 % 100003:06d}.dat" for i in range(40000))
    assert MIN_BITS < big.bits <= MAX_BITS
    assert not big.saturated


def test_the_wire_form_round_trips() -> None:
    bloom = Bloom.of(NAMES)
    assert Bloom.from_doc(bloom.doc()) == bloom


@pytest.mark.parametrize(
    ("bits", "data", "error"),
    [
        (MIN_BITS + 8, b"\0" * ((MIN_BITS + 8) // 8), "power of two"),
        (MIN_BITS // 2, b"\0" * (MIN_BITS // 16), "power of two"),
        (MAX_BITS * 2, b"", "power of two"),
        (MIN_BITS, b"\0" * 10, "bytes"),
    ],
)
def test_malformed_filters_are_refused(bits: int, data: bytes, error: str) -> None:
    doc = BloomDoc(bits=bits, hashes=4, data=base64.b64encode(data).decode())
    with pytest.raises(SummaryRefused, match=error):
        Bloom.from_doc(doc)


def test_data_that_is_not_base64_is_refused() -> None:
    with pytest.raises(SummaryRefused, match="base64"):
        Bloom.from_doc(BloomDoc(bits=MIN_BITS, hashes=4, data="!!!!"))


def test_a_union_of_sizes_keeps_every_member() -> None:
    small = Bloom.of(["alpha.txt"])
    big = Bloom.of(f"n{i}.bin" for i in range(3000))
    assert small.bits < big.bits
    union = Bloom.union([small, big])
    assert union.bits == big.bits
    assert union.may_contain(_probes("alpha"))
    assert union.may_contain(_probes("n2999.bin"))


class Books:
    """SummaryBooks that fetch each other's documents in memory."""

    def __init__(self, names: dict[str, list[str]]) -> None:
        self.books: dict[str, SummaryBook] = {}
        self.fetches: list[tuple[str, str | None]] = []
        self.broken: dict[str, SummaryDoc] = {}
        self.dead: set[str] = set()
        for peer_id, files in names.items():
            self.books[peer_id] = SummaryBook(peer_id, self._fetch)
            self.books[peer_id].set_names(files)

    async def _fetch(self, peer: Peer, etag: str | None) -> SummaryDoc | None:
        self.fetches.append((peer.peer_id, etag))
        if peer.peer_id in self.dead:
            raise ConnectionRefusedError("refused")
        if peer.peer_id in self.broken:
            return self.broken[peer.peer_id]
        book = self.books[peer.peer_id]
        return None if etag == book.version else book.document()


def _peers(*ids: str) -> list[Peer]:
    return [Peer(i, f"http://{i}") for i in ids]


async def test_neighbours_summaries_say_who_holds_and_who_is_near() -> None:
    books = Books({"a": [], "b": ["song.mp3"], "c": ["movie.mkv"]})
    await books.books["b"].refresh(_peers("c"))  # b merges c's
    await books.books["a"].refresh(_peers("b"))
    match = books.books["a"].match("movie")
    assert match.holds("b") == "miss"
    assert match.near("b") == "match"  # c, next to b, holds it
    assert books.books["a"].match("song").holds("b") == "match"
    assert match.holds("nobody") == "unknown"
    assert books.books["a"].match("mo").near("b") == "unknown"  # too short


async def test_an_unchanged_summary_is_not_sent_again() -> None:
    books = Books({"a": [], "b": ["x.txt"]})
    await books.books["a"].refresh(_peers("b"))
    await books.books["a"].refresh(_peers("b"))
    version = books.books["b"].version
    assert books.fetches == [("b", None), ("b", version)]
    assert books.books["a"].match("x.txt").holds("b") == "match"
    books.books["b"].set_names(["y.txt"])
    assert books.books["b"].version != version
    await books.books["a"].refresh(_peers("b"))
    assert books.books["a"].match("y.txt").holds("b") == "match"
    assert books.books["a"].match("x.txt").holds("b") == "miss"


async def test_failed_refused_and_former_neighbours_have_no_summary() -> None:
    books = Books({"a": [], "b": ["x.txt"], "c": ["z.txt"]})
    book = books.books["a"]
    await book.refresh(_peers("b", "c"))
    assert book.match("z.txt").holds("c") == "match"
    books.dead.add("c")
    other = books.books["b"].document().model_copy(update={"peer_id": "b"})
    books.broken["b"] = other.model_copy(update={"peer_id": "mallory"})
    await book.refresh(_peers("b", "c"))
    assert book.match("x.txt").holds("b") == "unknown"  # named another peer: refused
    assert book.match("zzz").holds("c") == "unknown"  # down: "may match", never "miss"
    await book.refresh(_peers())
    assert book.neighbours == {}


async def test_a_neighbour_claiming_everything_attracts_queries_only_to_itself() -> None:
    books = Books({"a": [], "liar": [], "b": ["x.txt"]})
    full = Bloom(MIN_BITS, 4, b"\xff" * (MIN_BITS // 8))
    books.broken["liar"] = SummaryDoc(
        peer_id="liar", version="v1", own=full.doc(), merged=full.doc()
    )
    await books.books["b"].refresh(_peers("liar"))
    # b does not merge the liar's claim: its merged filter still rules queries out.
    assert books.books["b"].merged == books.books["b"].own
    await books.books["a"].refresh(_peers("b", "liar"))
    match = books.books["a"].match("anything")
    assert match.near("b") == "miss"
    assert match.holds("liar") == "unknown"  # may match (asked), never steers a walk


def test_a_match_without_a_book_is_unknown() -> None:
    assert QueryMatch(None, "hello").holds("x") == "unknown"
