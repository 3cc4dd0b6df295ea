"""Property-based fuzzing (hypothesis) of the code that parses untrusted input.

- `peerfind.config.validate_http_url` and the directory's SSRF guard: the URL a
  stranger hands to /register;
- the /search query checks, directly and through the ASGI app: any string gets a
  200 or a 422, never a 5xx;
- `peerfind.index.validate_file_name` and `validate_shared_path`, `IndexReader.resolve`
  (the transfer service's and the content route's one resolver of a name and a path),
  and `IndexReader.search` / `lookup` against a real SQLite index (FTS5 phrase quoting,
  and case folding that agrees with Python's `str.casefold` for any Unicode).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os.path
import string
import unicodedata
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pydantic
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from directory.app import create_app
from directory.urlguard import PeerUrlGuard, UrlRefused
from peerfind.api import MAX_QUERY_LENGTH, ErrorResponse, SearchRequest, SearchResponse
from peerfind.config import PeerSettings, validate_http_url
from peerfind.errors import InvalidNameError
from peerfind.index import (
    MAX_NAME_LENGTH,
    MAX_PATH_LENGTH,
    FileEntry,
    IndexReader,
    IndexWriter,
    validate_file_name,
    validate_shared_path,
)

FUZZ = settings(
    max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# -- strategies ---------------------------------------------------------------------

# Characters parsers trip on, mixed into otherwise arbitrary text.
_NASTY = "/\\.:@?#%[]\"' \t\r\n\x00\x1f\x7f\x85\u2028\u202e\ufeff"
nasty_text = st.text(
    alphabet=st.one_of(st.sampled_from(_NASTY), st.characters(exclude_categories=["Cs"])),
    max_size=40,
)

_hosts = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
    st.from_regex(r"[a-z0-9][a-z0-9.-]{0,20}", fullmatch=True),
    st.sampled_from(["127.0.0.1", "localhost", "[::1]", "[::ffff:127.0.0.1]", "0", "1.2.3"]),
    nasty_text,
)
urls = st.builds(
    lambda *parts: "".join(parts),
    st.sampled_from(["", " ", "\t", "\n"]),
    st.sampled_from(["http", "https", "HTTP", "hTTpS", "ftp", "file", "", "javascript"])
    | st.text(max_size=6),
    st.sampled_from(["://", ":/", ":", "//", ":///", ""]),
    st.sampled_from(["", "", "", "u@", "u:p@", ":@", "@"]) | nasty_text.map(lambda t: t + "@"),
    _hosts,
    st.one_of(
        st.just(""),
        st.integers(-1, 70000).map(lambda p: f":{p}"),
        nasty_text.map(lambda t: ":" + t),
    ),
    st.sampled_from(["", "", "/", "//", "/x", "?", "?q=1", "#", "#f", "/?", " ", "\t", "\n"])
    | nasty_text,
    st.sampled_from(["", " ", "\n"]),
)
any_url = st.one_of(urls, nasty_text, st.text())


# -- the URL validator --------------------------------------------------------------


@FUZZ
@given(value=any_url)
@example("http://127.0.0.1:8000")
@example("http://a?")
@example("http://a#")
@example("http://@a")
@example("http://exa\tmple:80")
@example("https://[::1]:443/")
@example("http://a:0")
@example("http://a:65536")
@example("http://[::1")
def test_validate_http_url_raises_only_valueerror_and_accepts_only_bare_origins(
    value: str,
) -> None:
    try:
        result = validate_http_url(value)
    except ValueError:
        return
    parts = urlsplit(result)
    assert parts.scheme in ("http", "https")
    assert parts.hostname
    assert "@" not in parts.netloc  # not even empty credentials
    assert parts.path == "" and not parts.query and not parts.fragment
    assert parts.port is None or 1 <= parts.port <= 65535
    # Stricter than urlsplit, which silently drops tabs and newlines: what is
    # accepted is printable, and the peer's own URLs built on it mean what they say.
    assert "?" not in result and "#" not in result, result
    assert not any(c.isspace() or unicodedata.category(c) == "Cc" for c in result), repr(result)
    health = urlsplit(f"{result}/health")
    assert (health.hostname, health.port, health.path) == (parts.hostname, parts.port, "/health")


@FUZZ
@given(value=any_url)
def test_validate_http_url_is_idempotent(value: str) -> None:
    try:
        once = validate_http_url(value)
    except ValueError:
        return
    assert validate_http_url(once) == once


@FUZZ
@given(value=any_url)
@example("http://127.0.0.1:8000")
@example("http://[::ffff:127.0.0.1]:8000")
@example("http://[::ffff:10.0.0.1]:8000")
@example("http://localhost:8000")
@example("http://2130706433:8000")
@example("http://0x7f.1:8000")
def test_url_guard_never_leaves_the_allowed_network_and_never_resolves(value: str) -> None:
    """The settings the OpenAPI fuzz runs with: 127.0.0.0/8 only, IP literals only."""
    lookups: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        lookups.append(host)
        return ["127.0.0.1"]

    guard = PeerUrlGuard(["127.0.0.0/8"], resolve_hostnames=False, resolver=resolver)
    try:
        pinned = asyncio.run(guard.check(value))
    except UrlRefused:
        assert not lookups
        return
    assert not lookups
    address = ipaddress.ip_address(pinned.address)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    assert address in ipaddress.ip_network("127.0.0.0/8")
    assert urlsplit(pinned.base).hostname == str(pinned.address)


# -- the search query ---------------------------------------------------------------


def _query_ok(query: str) -> bool:
    return bool(query.strip()) and not any(unicodedata.category(c) in ("Cc", "Cs") for c in query)


@FUZZ
@given(query=st.one_of(nasty_text, st.text(max_size=300)))
@example(" \u3000\t")
@example("\x85")
def test_search_request_accepts_exactly_printable_non_blank_text(query: str) -> None:
    if _query_ok(query) and len(query) <= MAX_QUERY_LENGTH:
        assert SearchRequest(query=query).query == query
    else:
        with pytest.raises(pydantic.ValidationError):
            SearchRequest(query=query)


SAMPLE_NAMES = [
    "hello.txt",
    "HELLO2.TXT",
    'quote"d.txt',
    "it's.md",
    "100%_done.csv",
    "back\\slash?.bin",  # a POSIX name like any other (issue 17, item 16)
    "tab\tand\nnewline.txt",
    "a..b",
    "ünïcødé Straße.md",
    "日本語のファイル.txt",
    "a",
    "ab",
    "x_y%z",
    "*.glob",
    "NEAR AND OR NOT.txt",
    "col:umn^.txt",
]


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[IndexWriter, Path]]:
    db = tmp_path_factory.mktemp("index") / "index.sqlite3"
    writer = IndexWriter(db)
    writer.replace_all(
        FileEntry(path=f"dir{i}/{name}", name=name, size=i, mtime=float(i))
        for i, name in enumerate(SAMPLE_NAMES)
    )
    writer.heartbeat()
    yield writer, db
    writer.close()


@pytest.fixture(scope="module")
def client(
    tmp_path_factory: pytest.TempPathFactory, index: tuple[IndexWriter, Path]
) -> Iterator[TestClient]:
    _, db = index
    extra = {"rate_limit_rps": 0} if "rate_limit_rps" in PeerSettings.model_fields else {}
    config = PeerSettings(
        peer_id="fuzz",
        shared_dir=tmp_path_factory.mktemp("shared"),
        state_dir=db.parent,
        **extra,  # type: ignore[arg-type]
    )
    with TestClient(create_app(config)) as c:
        yield c


def _assert_ok_or_422(response: object) -> dict[str, object] | None:
    status = response.status_code  # type: ignore[attr-defined]
    assert status in (200, 422), (status, response.text)  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    if status == 422:
        ErrorResponse.model_validate(body)
        return None
    SearchResponse.model_validate(body)
    return body  # type: ignore[no-any-return]


@FUZZ
@given(query=st.one_of(nasty_text, st.text(max_size=MAX_QUERY_LENGTH + 20)))
@example("")
@example('"')
@example('"" OR *')
@example("%")
@example("_")
@example("a" * (MAX_QUERY_LENGTH + 1))
def test_search_endpoint_answers_any_query_with_200_or_422(client: TestClient, query: str) -> None:
    body = _assert_ok_or_422(client.get("/search", params={"query": query}))
    if body is None:
        return
    assert _query_ok(query) and len(query) <= MAX_QUERY_LENGTH
    names = [h["name"] for h in body["hits"]]  # type: ignore[index]
    assert set(names) <= set(SAMPLE_NAMES)
    assert sorted(names) == sorted(n for n in SAMPLE_NAMES if query.casefold() in n.casefold())


@FUZZ
@given(raw=st.binary(max_size=40))
def test_search_endpoint_answers_raw_bytes_with_200_or_422(client: TestClient, raw: bytes) -> None:
    """Percent-encoded bytes that are not UTF-8 (or are, but odd) in the query string."""
    url = "/search?query=" + urllib.parse.quote_from_bytes(raw, safe="")
    _assert_ok_or_422(client.get(url))


_param_text = st.one_of(
    st.integers(-(2**40), 2**40).map(str), nasty_text, st.sampled_from(["", "1e3", "0x10", "NaN"])
)


@FUZZ
@given(
    fanout=_param_text,
    ttl=_param_text,
    timeout_ms=_param_text,
    qid=st.one_of(st.none(), nasty_text, st.from_regex(r"[A-Za-z0-9_-]{8,64}", fullmatch=True)),
    sender=st.one_of(st.none(), nasty_text),
)
def test_search_endpoint_answers_any_parameters_without_a_server_error(
    client: TestClient, fanout: str, ttl: str, timeout_ms: str, qid: str | None, sender: str | None
) -> None:
    params = {"query": "hello", "fanout": fanout, "ttl": ttl, "timeout_ms": timeout_ms}
    if qid is not None:
        params["qid"] = qid
    if sender is not None:
        params["sender"] = sender
    response = client.get("/search", params=params)
    assert response.status_code < 500, response.text
    assert response.status_code in (200, 401, 422), response.text


# -- file names and the index -------------------------------------------------------


def _name_ok(name: str) -> bool:
    """What some file on POSIX may have as its base name, and an index may store (UTF-8):
    names are looked up, never joined to a path (issue 17, item 16 relaxed the old rule,
    which also refused '\\', '..' anywhere and control characters)."""
    return (
        0 < len(name) <= MAX_NAME_LENGTH
        and "/" not in name
        and "\x00" not in name
        and name not in (".", "..")
        and not any(unicodedata.category(c) == "Cs" for c in name)
    )


names = st.one_of(
    nasty_text,
    st.text(alphabet=st.sampled_from("./\\ab"), max_size=8),
    st.integers(MAX_NAME_LENGTH - 3, MAX_NAME_LENGTH + 3).map(lambda n: "n" * n),
    st.text(),
)


@FUZZ
@given(name=names)
@example(".")
@example("..")
@example("...")
@example("a..b")
@example(".hidden")
@example("x" * MAX_NAME_LENGTH)
@example("x" * (MAX_NAME_LENGTH + 1))
@example("\u202eexe.txt")
@example("tab\there")
@example("\n")
@example("\udc80")
def test_validate_file_name_refuses_exactly_what_no_base_name_can_be(name: str) -> None:
    if _name_ok(name):
        assert validate_file_name(name) == name
    else:
        with pytest.raises(InvalidNameError) as info:
            validate_file_name(name)
        assert isinstance(info.value, ValueError)  # what callers catch


paths = st.one_of(
    st.lists(names, min_size=0, max_size=5).map("/".join),
    st.text(alphabet=st.sampled_from("./ab\x00"), max_size=12),
    nasty_text,
)


@FUZZ
@given(path=paths)
@example("")
@example("/")
@example("a/")
@example("/a")
@example("a//b")
@example("a/./b")
@example("a/../../etc/passwd")
@example("..a/b..")
@example("x" * (MAX_PATH_LENGTH + 1))
def test_validate_shared_path_accepts_exactly_plain_relative_paths(path: str) -> None:
    parts = path.split("/")
    plain = 0 < len(path) <= MAX_PATH_LENGTH and all(_name_ok(p) for p in parts)
    if not plain:
        with pytest.raises(InvalidNameError):
            validate_shared_path(path)
        return
    assert validate_shared_path(path) == path
    # What it accepts never leaves the folder it is relative to, whatever it holds.
    root = "/srv/shared"
    joined = os.path.normpath(os.path.join(root, path))
    assert joined.startswith(root + "/") and joined == f"{root}/{path}"


@FUZZ
@given(name=st.one_of(st.just(""), names), path=st.one_of(st.just(""), paths))
@example(name="hello.txt", path="dir0/hello.txt")
@example(name="", path="dir0/hello.txt")
@example(name="hello.txt", path="dir1/hello.txt")
@example(name="HELLO2.TXT", path="dir0/hello.txt")
@example(name="a..b", path="")
def test_resolve_finds_exactly_the_named_path_or_refuses(
    index: tuple[IndexWriter, Path], name: str, path: str
) -> None:
    reader = IndexReader(index[1])
    stored = {f"dir{i}/{n}": n for i, n in enumerate(SAMPLE_NAMES)}
    try:
        entry = reader.resolve(name, path)
    except InvalidNameError:
        if path:
            base = path.rpartition("/")[2]
            refused_path = not (0 < len(path) <= MAX_PATH_LENGTH) or not all(
                _name_ok(p) for p in path.split("/")
            )
            assert refused_path or (name and name != base)
        else:
            assert not _name_ok(name)
        return
    if path:
        assert (entry is not None) == (path in stored)
        assert entry is None or (entry.path == path and entry.name == stored[path])
    else:
        assert _name_ok(name)
        assert (entry is not None) == (name in SAMPLE_NAMES)
        assert entry is None or entry.name == name


@FUZZ
@given(query=st.one_of(nasty_text, st.text(max_size=300)), limit=st.integers(-3, 50))
@example(query='"', limit=10)
@example(query='""', limit=10)
@example(query="%", limit=10)
@example(query="\\", limit=10)
@example(query="*", limit=10)
@example(query="NEAR(", limit=10)
@example(query="\x00", limit=10)
def test_index_search_and_lookup_never_raise_and_match_substrings(
    index: tuple[IndexWriter, Path], query: str, limit: int
) -> None:
    reader = IndexReader(index[1])
    found = reader.search(query, limit)
    assert len(found) <= max(limit, 0)
    assert all(isinstance(e, FileEntry) and e.name in SAMPLE_NAMES for e in found)
    if limit >= len(SAMPLE_NAMES):
        expected = sorted(
            n
            for n in SAMPLE_NAMES
            if query and "\x00" not in query and query.casefold() in n.casefold()
        )
        assert sorted(e.name for e in found) == expected
    entry = reader.lookup(query)
    assert entry is None or entry.name == query
    assert (entry is not None) == (query in SAMPLE_NAMES)


valid_names = st.text(
    alphabet=st.characters(
        exclude_categories=["Cc", "Cs"], exclude_characters="/\\", max_codepoint=0x2FFF
    )
    | st.sampled_from(string.punctuation.replace("/", "").replace("\\", "")),
    min_size=1,
    max_size=30,
).filter(_name_ok)


@settings(max_examples=150, deadline=None)
@given(
    stored=st.lists(valid_names, min_size=1, max_size=6, unique=True),
    data=st.data(),
)
def test_every_substring_of_an_indexed_name_finds_it(
    tmp_path_factory: pytest.TempPathFactory, stored: list[str], data: st.DataObject
) -> None:
    """Completeness: any piece of a name, cut anywhere, finds that name (FTS and LIKE)."""
    db = tmp_path_factory.mktemp("idx") / "index.sqlite3"
    writer = IndexWriter(db)
    try:
        writer.replace_all(FileEntry(path=n, name=n, size=1, mtime=1.0) for n in stored)
        target = data.draw(st.sampled_from(stored))
        start = data.draw(st.integers(0, len(target) - 1))
        end = data.draw(st.integers(start + 1, len(target)))
        piece = target[start:end]
        assume(piece.strip())
        reader = IndexReader(db)
        assert target in [e.name for e in reader.search(piece, 100)], (piece, stored)
        assert reader.lookup(target) is not None
    finally:
        writer.close()


_case_changes = st.sampled_from([str, str.upper, str.lower, str.title, str.swapcase, str.casefold])


@settings(max_examples=300, deadline=None)
@given(
    stored=st.lists(valid_names, min_size=1, max_size=6, unique=True),
    data=st.data(),
)
@example(stored=["été.txt"], data=None)
def test_search_is_casefold_substring_match_for_any_unicode(
    tmp_path_factory: pytest.TempPathFactory, stored: list[str], data: st.DataObject | None
) -> None:
    """Exactly the names whose casefold contains the query's casefold, for queries of
    any length (one and two characters are the scan, three and more the trigram index)
    and any case change of a piece of a stored name (issue 17, item 17: 'É' found
    nothing)."""
    if data is None:
        target, piece, change = stored[0], "É", str
    else:
        target = data.draw(st.sampled_from(stored))
        start = data.draw(st.integers(0, len(target) - 1))
        end = data.draw(st.integers(start + 1, min(len(target), start + 4)))
        piece, change = target[start:end], data.draw(_case_changes)
    query = change(piece)
    assume("\x00" not in query)
    db = tmp_path_factory.mktemp("idx") / "index.sqlite3"
    writer = IndexWriter(db)
    try:
        writer.replace_all(FileEntry(path=n, name=n, size=1, mtime=1.0) for n in stored)
        found = sorted(e.name for e in IndexReader(db).search(query, 100))
        assert found == sorted(n for n in stored if query.casefold() in n.casefold()), query
        if change in (str, str.casefold):
            assert target in found
    finally:
        writer.close()
