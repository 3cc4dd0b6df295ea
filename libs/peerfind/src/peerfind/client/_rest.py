"""`PeerClient`: the typed async client of one peer's REST directory."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Collection, Mapping
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from peerfind.api import (
    ADAPTIVE_SEARCH_TIMEOUT_MS,
    BootstrapResponse,
    FileInfo,
    FilesResponse,
    HealthResponse,
    PeersResponse,
    RegisterRequest,
    RegisterResponse,
    SearchMode,
    SearchRequest,
    SearchResponse,
)
from peerfind.client._defaults import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_SEARCH_TIMEOUT_MS,
    DEFAULT_TIMEOUT_S,
    SEARCH_MARGIN_S,
)
from peerfind.client._errors import first_error, reason, refusal
from peerfind.config import validate_http_url
from peerfind.errors import ClientError, PeerRefused, PeerUnreachable, describe_errors
from peerfind.tls import TlsFiles, client_ssl_context

__all__ = ["PeerClient", "search_request"]

_ModelT = TypeVar("_ModelT", bound=BaseModel)


class PeerClient:
    """Async client of one peer's REST API (the directory service).

    `async with PeerClient(url) as peer:` owns an `httpx.AsyncClient`; pass
    `http=` to share one client between many peers (it is then left open, and its
    own `verify=` decides how HTTPS is checked). `tls=` verifies HTTPS peers against
    `tls.ca_file` (and presents `tls.cert_file` when given); without it, https://
    URLs are checked against the system's CAs.
    """

    def __init__(
        self,
        base_url: str,
        *,
        tls: TlsFiles | None = None,
        http: httpx.AsyncClient | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        try:
            self.base_url = validate_http_url(base_url)
        except ValueError as exc:
            raise ClientError(f"invalid peer URL {base_url!r}: {exc}") from None
        if http is not None and tls is not None:
            raise ClientError("pass tls= or http=, not both: a shared http client has its TLS")
        self.timeout = timeout
        self._owns_http = http is None
        self._http = (
            http
            if http is not None
            else httpx.AsyncClient(timeout=self._timeout(), verify=_verify(tls))
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client if this object created it."""
        if self._owns_http:
            await self._http.aclose()

    async def health(self) -> HealthResponse:
        """`GET /health`. A degraded peer may answer 503 with the same body."""
        return await self._call("GET", "/health", HealthResponse, also_ok=(503,))

    async def peers(self) -> PeersResponse:
        """`GET /peers`: the peers this peer knows."""
        return await self._call("GET", "/peers", PeersResponse)

    async def files(self, limit: int | None = None, after: str | None = None) -> FilesResponse:
        """`GET /files`: one page of this peer's index, after path `after`."""
        params: dict[str, str | int] = {}
        if limit is not None:
            params["limit"] = limit
        if after is not None:
            params["after"] = after
        return await self._call("GET", "/files", FilesResponse, params=params)

    async def iter_files(self, page_size: int | None = None) -> AsyncIterator[FileInfo]:
        """Every file of this peer's index, page after page (keyset pagination)."""
        after: str | None = None
        while True:
            page = await self.files(limit=page_size, after=after)
            for info in page.files:
                yield info
            if page.next_after is None:
                return
            if page.next_after == after:
                raise PeerRefused(f"{self.base_url} repeated page cursor {after!r} for /files")
            after = page.next_after

    async def search(
        self,
        query: str,
        fanout: int | None = None,
        timeout_ms: int | None = None,
        *,
        mode: SearchMode | None = None,
        max_results: int | None = None,
        budget: int | None = None,
        explain: bool = False,
    ) -> SearchResponse:
        """`GET /search`: ask this peer to search itself and the peers it reaches.

        `mode` picks how the query travels (the peer's choice when None), `max_results`
        stops a walk or a dynamic query once that many hits are in, `budget` caps the
        messages it may cost, and `explain` asks for the hop tree (`SearchResponse.trace`).
        """
        request = search_request(
            query,
            fanout,
            timeout_ms,
            mode=mode,
            max_results=max_results,
            budget=budget,
            explain=explain,
        )
        return await self.send_search(request)

    async def send_search(self, request: SearchRequest) -> SearchResponse:
        """`GET /search` with a request already built (by `search_request`, say)."""
        deadline_ms = request.timeout_ms
        if deadline_ms is None:  # the peer's default for the mode (auto may walk)
            flood = request.mode == "flood"
            deadline_ms = DEFAULT_SEARCH_TIMEOUT_MS if flood else ADAPTIVE_SEARCH_TIMEOUT_MS
        wait_s = max(self.timeout, deadline_ms / 1000) + SEARCH_MARGIN_S
        return await self._call(
            "GET", "/search", SearchResponse, params=request.to_params(), budget_s=wait_s
        )

    async def register(self, url: str) -> RegisterResponse:
        """`POST /register`: ask this peer to verify and add the peer at `url`."""
        body = RegisterRequest(url=url).model_dump()
        return await self._call("POST", "/register", RegisterResponse, json=body)

    async def bootstrap(self) -> BootstrapResponse:
        """`POST /bootstrap`: make this peer (re)register with its friends."""
        return await self._call("POST", "/bootstrap", BootstrapResponse)

    def _timeout(self, total: float | None = None) -> httpx.Timeout:
        total = self.timeout if total is None else total
        return httpx.Timeout(total, connect=min(total, DEFAULT_CONNECT_TIMEOUT_S))

    async def _call(
        self,
        method: str,
        path: str,
        model: type[_ModelT],
        *,
        params: Mapping[str, str | int] | None = None,
        json: Any = None,
        budget_s: float | None = None,
        also_ok: Collection[int] = (),
    ) -> _ModelT:
        url = self.base_url + path
        try:
            response = await self._http.request(
                method, url, params=params, json=json, timeout=self._timeout(budget_s)
            )
        except httpx.TimeoutException:
            seconds = self.timeout if budget_s is None else budget_s
            raise PeerUnreachable(
                f"cannot reach {self.base_url}: no answer to {path} within {seconds:g} s"
            ) from None
        except httpx.TransportError as exc:
            raise PeerUnreachable(f"cannot reach {self.base_url}: {reason(exc)}") from None
        if response.is_success or response.status_code in also_ok:
            try:
                return model.model_validate_json(response.content)
            except ValidationError as exc:
                if response.is_success:
                    raise PeerRefused(
                        f"{self.base_url} sent a malformed answer to {path}: {first_error(exc)}"
                    ) from None
        raise PeerRefused(refusal(self.base_url, response))


def search_request(
    query: str,
    fanout: int | None = None,
    timeout_ms: int | None = None,
    *,
    mode: SearchMode | None = None,
    max_results: int | None = None,
    budget: int | None = None,
    explain: bool = False,
) -> SearchRequest:
    """A client's search as the one model of `/search`'s query string, checked as the
    peer would check it; `ClientError("invalid search: ...")` naming the bad field.

    Only what a client may set: `qid`, `sender` and `visited` are the forwarding peers'.
    """
    try:
        return SearchRequest(
            query=query,
            fanout=fanout,
            timeout_ms=timeout_ms,
            mode=mode,
            max_results=max_results,
            budget=budget,
            explain=True if explain else None,  # absent, not `explain=false`
        )
    except ValidationError as exc:
        raise ClientError(f"invalid search: {describe_errors(exc.errors())}") from None


def _verify(tls: TlsFiles | None) -> ssl.SSLContext | bool:
    """httpx's `verify=`: our CA (and client certificate) when TLS is on, else the defaults."""
    return client_ssl_context(tls) if tls is not None and tls.enabled else True
