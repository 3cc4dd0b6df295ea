"""The REST surface in-process: contract shapes, validation, error bodies."""

from __future__ import annotations

import contextlib
import socketserver
import threading
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from directory.app import HotRoute
from directory.identity import Claim, PeerKey, check_proof, new_challenge
from directory.routers import search as search_routes
from peerfind.api import (
    CHALLENGE_HEADER,
    ErrorResponse,
    FilesResponse,
    HealthResponse,
    SearchResponse,
)
from peerfind.index import IndexWriter


def assert_error(response, status: int, error: str | None = None) -> ErrorResponse:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    body = ErrorResponse.model_validate(response.json())
    if error:
        assert body.error == error
    assert "Traceback" not in body.detail
    return body


def test_health_reports_missing_index_and_transfer(client: TestClient) -> None:
    health = HealthResponse.model_validate(client.get("/health").json())
    assert health.peer == health.peer_id == "p1"
    assert health.status == "degraded"
    assert not health.index.available and health.index.stale
    assert not health.transfer.serving


def test_health_with_fresh_index(client: TestClient, writer: IndexWriter) -> None:
    health = HealthResponse.model_validate(client.get("/health").json())
    assert health.index.available and not health.index.stale
    assert health.index.files == 3 and health.index.bytes == 29
    assert health.status == "degraded"  # transfer is still not running


def test_health_proves_the_peer_s_key_for_a_challenge_and_keeps_the_key(
    client: TestClient,
) -> None:
    challenge = new_challenge()
    body = client.get("/health", headers={CHALLENGE_HEADER: challenge}).json()
    health = HealthResponse.model_validate(body)
    assert health.proof is not None and len(health.key_id) == 52
    claim = Claim(health.peer_id, health.url, health.grpc_address)
    assert check_proof(health.proof, challenge, claim) == health.key_id
    assert client.get("/health").json()["proof"] is None  # no challenge, no proof
    node = client.app.state.node  # type: ignore[attr-defined]
    assert PeerKey.load_or_create(node.settings.identity_path).key_id == health.key_id
    for bad in ("short", "x" * 65, "not/url+safe/nonce!!"):
        answer = client.get("/health", headers={CHALLENGE_HEADER: bad})
        assert_error(answer, 422, "invalid_request")
        answer = client.post("/register", json={"url": "http://10.9.9.9:1"},
                             headers={CHALLENGE_HEADER: bad})  # fmt: skip
        assert_error(answer, 422, "invalid_request")


def test_files_lists_index_with_fetch_addresses(client: TestClient, writer: IndexWriter) -> None:
    body = FilesResponse.model_validate(client.get("/files").json())
    assert [f.path for f in body.files] == ["b.bin", "docs/readme.TXT", "hello1.txt"]
    assert body.total == 3 and body.next_after is None
    first = body.files[0]
    assert first.rest_url.startswith("http://127.0.0.1:")
    assert first.grpc_address.startswith("127.0.0.1:")
    page = FilesResponse.model_validate(client.get("/files", params={"limit": 2}).json())
    assert len(page.files) == 2 and page.next_after == "docs/readme.TXT"
    rest = client.get("/files", params={"limit": 2, "after": page.next_after}).json()
    assert [f["path"] for f in rest["files"]] == ["hello1.txt"]


def test_search_local_only_peer(client: TestClient, writer: IndexWriter) -> None:
    body = SearchResponse.model_validate(client.get("/search", params={"query": ".txt"}).json())
    assert sorted(h.name for h in body.hits) == ["hello1.txt", "readme.TXT"]
    assert body.peers_answered == ["p1"] and not body.partial
    short = client.get("/search", params={"query": "b"}).json()
    assert {h["name"] for h in short["hits"]} == {"b.bin"}


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"query": ""},
        {"query": "x" * 257},
        {"query": "   "},
        {"query": "a\x00b"},
        {"query": "a", "fanout": -1},
        {"query": "a", "fanout": 33},
        {"query": "a", "fanout": "two"},
        {"query": "a", "ttl": 99},
        {"query": "a", "timeout_ms": 0},
        {"query": "a", "qid": "bad id!"},
        {"query": "a", "sender": "../x"},
    ],
)
def test_search_bad_input_is_422_json(client: TestClient, params: dict[str, object]) -> None:
    assert_error(client.get("/search", params=params), 422, "invalid_request")


def test_fanout_is_clamped_not_refused(client: TestClient, writer: IndexWriter) -> None:
    response = client.get("/search", params={"query": "hello", "fanout": 32, "ttl": 16})
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"url": "ftp://example.org"}, 400),
        ({"url": "not a url"}, 400),
        ({"url": "http://127.0.0.1:1/path"}, 400),
        ({"url": "http://user:pw@127.0.0.1:1"}, 400),
        ({"url": ""}, 422),
        ({"url": "http://127.0.0.1:1", "extra": 1}, 422),
        ({}, 422),
        ({"url": 5}, 422),
    ],
)
def test_register_bad_input(client: TestClient, body: object, status: int) -> None:
    assert_error(client.post("/register", json=body), status)
    assert client.get("/peers").json()["peers"] == []


def test_register_unreachable_url_changes_nothing(client: TestClient) -> None:
    from peerfind_devnet import free_port

    body = assert_error(
        client.post("/register", json={"url": f"http://127.0.0.1:{free_port()}"}), 400
    )
    assert body.error == "not_a_peer"
    assert client.get("/peers").json()["peers"] == []


@contextlib.contextmanager
def _service(reply: bytes) -> Iterator[int]:
    """A TCP service on 127.0.0.1 that answers every connection with `reply`, then closes."""

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.request.recv(4096)
            self.request.sendall(reply)

    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield server.server_address[1]
        finally:
            server.shutdown()
            thread.join(5)


def test_register_errors_do_not_tell_what_listens_on_a_port(client: TestClient) -> None:
    """A closed port, a service that is not HTTP, an HTTP one that is not JSON and a JSON
    one that is not a peer all get the same answer: /register is no port scanner."""
    from peerfind_devnet import free_port

    html = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 6\r\n\r\n<html>"
    other = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    answers = []
    with (
        _service(b"SSH-2.0-OpenSSH_9.2\r\n") as ssh,
        _service(html) as web,
        _service(other) as api,
    ):
        for port in (free_port(), ssh, web, api):
            url = f"http://127.0.0.1:{port}"
            body = assert_error(client.post("/register", json={"url": url}), 400)
            answers.append((body.error, body.detail.replace(url, "URL")))
    assert answers == [("not_a_peer", "URL did not answer /health as a peer")] * 4
    assert client.get("/peers").json()["peers"] == []


def test_register_self_is_409(client: TestClient) -> None:
    url = client.get("/health").json()["url"]
    assert_error(client.post("/register", json={"url": url}), 409, "self")


def test_malformed_json_body_is_422(client: TestClient) -> None:
    response = client.post(
        "/register", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_error(response, 422)


def test_unknown_route_and_method(client: TestClient) -> None:
    assert_error(client.get("/nope"), 404, "not_found")
    assert_error(client.delete("/peers"), 405)


def test_bootstrap_without_friends_says_so(client: TestClient) -> None:
    body = client.post("/bootstrap").json()
    assert body["ok"] is False and body["errors"] == ["no friends configured"]


def test_metrics_exposed(client: TestClient, writer: IndexWriter) -> None:
    client.get("/search", params={"query": "hello"})
    text = client.get("/metrics").text
    assert 'peerfind_directory_searches_received_total{role="entry"}' in text
    assert 'peerfind_directory_http_requests_total{method="GET",route="/search"' in text
    assert 'peerfind_build_info{peer="p1",service="directory"' in text


def test_metrics_label_unknown_methods_as_other(client: TestClient) -> None:
    # Any token is a valid HTTP method: a label per client-chosen method would let
    # anyone grow the metrics without bound.
    for method in ("BREW", "PROPFIND", "X-ANYTHING"):
        assert client.request(method, "/search", params={"query": "x"}).status_code == 405
    text = client.get("/metrics").text
    assert 'method="other",route="/search",status="405"} 3.0' in text
    assert "BREW" not in text and "PROPFIND" not in text


def test_search_is_served_by_the_hot_route_with_the_documented_contract(
    client: TestClient,
) -> None:
    app = client.app
    first = app.router.routes[0]  # type: ignore[attr-defined]
    assert isinstance(first, HotRoute) and first.path == "/search"
    (documented,) = search_routes.router.routes  # what FastAPI documents for /search
    assert documented.endpoint is first.endpoint  # type: ignore[attr-defined]
    assert client.head("/search", params={"query": "x"}).status_code == 405  # as documented
    assert client.post("/search", params={"query": "x"}).json()["error"] == "method_not_allowed"


def test_openapi_lists_the_seed_endpoints(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/health", "/register", "/bootstrap", "/peers", "/files", "/search"):
        assert path in paths


def test_default_policy_refuses_loopback_registration(settings) -> None:  # type: ignore[no-untyped-def]
    from directory.app import create_app

    strict = settings.model_copy(update={"peer_networks": []})
    with TestClient(create_app(strict)) as c:
        body = assert_error(c.post("/register", json={"url": "http://127.0.0.1:9"}), 400)
        assert body.error == "loopback"
        assert "peer_networks" in body.detail
        body = assert_error(c.post("/register", json={"url": "http://169.254.169.254"}), 400)
        assert body.error == "link_local"
        assert c.get("/peers").json()["peers"] == []


def test_rate_limit_gives_429_with_retry_after(settings) -> None:  # type: ignore[no-untyped-def]
    from directory.app import create_app

    limited = settings.model_copy(update={"rate_limit_rps": 0.01, "rate_limit_burst": 2})
    with TestClient(create_app(limited)) as c:
        assert c.get("/search", params={"query": "x"}).status_code == 200
        assert c.get("/search", params={"query": "x"}).status_code == 200
        response = c.get("/search", params={"query": "x"})
        assert_error(response, 429, "rate_limited")
        assert int(response.headers["Retry-After"]) >= 1
        assert c.get("/health").status_code == 200  # health is never limited


def test_cluster_token_guards_peer_calls(settings) -> None:  # type: ignore[no-untyped-def]
    from pydantic import SecretStr

    from directory.app import create_app

    secured = settings.model_copy(update={"cluster_token": SecretStr("s3cret")})
    with TestClient(create_app(secured)) as c:
        assert_error(c.post("/register", json={"url": "http://127.0.0.1:9"}), 401, "unauthorized")
        assert_error(c.post("/bootstrap"), 401)
        assert_error(c.post("/bootstrap", headers={"X-Peerfind-Token": "wrong"}), 401)
        forwarded = {"query": "x", "qid": "abcdefgh12", "sender": "p2"}
        assert_error(c.get("/search", params=forwarded), 401)
        ok = c.get("/search", params=forwarded, headers={"X-Peerfind-Token": "s3cret"})
        assert ok.status_code == 200
        assert c.get("/search", params={"query": "x"}).status_code == 200  # clients need none
        assert c.post("/bootstrap", headers={"X-Peerfind-Token": "s3cret"}).status_code == 200
