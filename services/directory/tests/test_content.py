"""GET/HEAD /files/{name}/content and the `content_url` of hits: a link names one file.

HEAD answers from the index alone (no byte is read), so these run without a transfer
service; the bytes through `Download` are tests/integration/test_realfiles.py's.
"""

from __future__ import annotations

from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from fastapi.testclient import TestClient

from peerfind.api import FilesResponse, SearchResponse
from peerfind.index import FileEntry, IndexWriter

# Issue 17, item 16: names with what a URL or a shell treats specially.
ODD = [
    FileEntry("a/dup.txt", "dup.txt", 11, 1.0),
    FileEntry("b/dup.txt", "dup.txt", 22, 1.0),
    FileEntry("odd/new\nline #1?.txt", "new\nline #1?.txt", 33, 1.0),
    FileEntry("odd/100% done&x=1+2.txt", "100% done&x=1+2.txt", 44, 1.0),
    FileEntry("sp ace/tab\there..txt", "tab\there..txt", 55, 1.0),
]


@pytest.fixture
def odd_index(writer: IndexWriter) -> IndexWriter:
    writer.replace_all(ODD)
    return writer


def local(url: str) -> str:
    """The path and query of a hit's URL, encoded exactly as the peer wrote them."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def test_content_urls_name_the_file_by_its_path_encoded_whole(
    client: TestClient, odd_index: IndexWriter
) -> None:
    files = FilesResponse.model_validate(client.get("/files").json()).files
    assert {f.path for f in files} == {e.path for e in ODD}
    for info in files:
        parts = urlsplit(info.content_url)
        assert "\n" not in info.content_url and " " not in info.content_url
        assert parts.fragment == ""  # a '#' in a name is encoded, never a fragment
        segments = parts.path.split("/")
        assert segments[:2] == ["", "files"] and segments[3:] == ["content"]
        assert unquote(segments[2]) == info.name
        assert parse_qs(parts.query) == {"path": [info.path]}
    found = SearchResponse.model_validate(client.get("/search", params={"query": "dup"}).json())
    assert sorted(local(h.content_url) for h in found.hits) == [
        "/files/dup.txt/content?path=a/dup.txt",
        "/files/dup.txt/content?path=b/dup.txt",
    ]


def test_head_of_a_content_url_answers_for_that_file(
    client: TestClient, odd_index: IndexWriter
) -> None:
    for info in FilesResponse.model_validate(client.get("/files").json()).files:
        answer = client.head(local(info.content_url))
        assert answer.status_code == 200, (info.path, answer.text)
        assert answer.headers["content-length"] == str(info.size)
    # By name alone: the first of that name by path, as before paths were sent.
    assert client.head("/files/dup.txt/content").headers["content-length"] == "11"
    by_path = client.head("/files/dup.txt/content", params={"path": "b/dup.txt"})
    assert by_path.headers["content-length"] == "22"
    assert by_path.headers["content-disposition"] == "inline; filename*=UTF-8''dup.txt"


@pytest.mark.parametrize(
    ("name", "path", "detail"),
    [
        ("other.txt", "a/dup.txt", "no such file: name 'other.txt' is not the base name"),
        ("dup.txt", "a/../b/dup.txt", "no such file: path must not have an empty, '.' or '..'"),
        ("dup.txt", "/a/dup.txt", "no such file: path must be relative"),
        ("dup.txt", "c/dup.txt", "no file at path 'c/dup.txt' on peer p1"),
        ("absent.txt", "", "no file named 'absent.txt' on peer p1"),
    ],
)
def test_a_content_url_that_names_no_file_is_404(
    client: TestClient, odd_index: IndexWriter, name: str, path: str, detail: str
) -> None:
    params = {"path": path} if path else {}
    answer = client.get(f"/files/{name}/content", params=params)
    assert answer.status_code == 404, answer.text
    assert answer.json()["error"] == "not_found"
    assert answer.json()["detail"].startswith(detail)
