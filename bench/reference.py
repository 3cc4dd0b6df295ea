"""The bare reference fan-out of the search benchmark, run as processes by `bench.search`.

    python -m bench.reference leaf  --host 127.0.0.32 --port P --body leaf.json
    python -m bench.reference entry --host 127.0.0.31 --port P --body entry-hits.json \\
        --leaf http://127.0.0.32:P --leaf http://127.0.0.33:Q

A leaf answers `GET /search` with fixed bytes: the JSON our own peer answered to
the same forwarded query, so both fan-outs move the same bytes. The entry is the
minimal FastAPI endpoint of the issue: it gathers one GET per leaf over one
shared httpx.AsyncClient and returns their hits with its own (fixed) ones. None
of our features: no query id or dedup, no TTL, no deadline, no metrics, no
validation of the leaves' answers. Served by uvicorn with the directory's own
settings (asyncio loop, h11, 5 s keep-alive, no access log).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

__all__ = ["entry_app", "leaf_app"]


def leaf_app(body: bytes) -> FastAPI:
    app = FastAPI()

    @app.get("/search")
    async def search() -> Response:
        return Response(body, media_type="application/json")

    return app


def entry_app(leaves: list[str], own_hits: list[object]) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The reference: one shared httpx client (the directory's pool sizes;
        # keep-alive below uvicorn's 5 s). The directory itself forwards over aiohttp.
        limits = httpx.Limits(
            max_connections=256, max_keepalive_connections=64, keepalive_expiry=4.0
        )
        async with httpx.AsyncClient(timeout=2.0, trust_env=False, limits=limits) as client:
            app.state.client = client
            yield

    app = FastAPI(lifespan=lifespan)

    @app.get("/search")
    async def search(request: Request, query: str) -> JSONResponse:
        client: httpx.AsyncClient = request.app.state.client
        answers = await asyncio.gather(
            *(client.get(f"{leaf}/search", params={"query": query}) for leaf in leaves)
        )
        hits = list(own_hits)
        for answer in answers:
            hits.extend(json.loads(answer.content)["hits"])
        return JSONResponse({"query": query, "hits": hits})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.reference")
    parser.add_argument("kind", choices=["entry", "leaf"])
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--body", type=Path, required=True, help="leaf: answer; entry: own hits")
    parser.add_argument("--leaf", action="append", default=[], help="entry: a leaf's URL")
    args = parser.parse_args()
    body = args.body.read_bytes()
    app = leaf_app(body) if args.kind == "leaf" else entry_app(args.leaf, json.loads(body))
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_config=None,
        access_log=False,
        timeout_keep_alive=5,
        lifespan="on",
    )


if __name__ == "__main__":
    main()
