"""Metric helpers shared by every service.

Each service defines its own metrics once, in its `metrics.py`, named
`peerfind_<service>_<what>_<unit>`. This module holds what they all share:
the build-info gauge and the stand-alone /metrics HTTP server used by the
services that have no HTTP server of their own (transfer, indexer).
"""

from __future__ import annotations

import logging
from typing import Generic, TypeVar

from prometheus_client import Gauge, start_http_server
from prometheus_client.metrics import MetricWrapperBase

from peerfind import __version__

__all__ = ["BUILD_INFO", "Children", "serve_metrics", "set_build_info"]

logger = logging.getLogger(__name__)

BUILD_INFO = Gauge(
    "peerfind_build_info",
    "Always 1; labels name the running version, peer and service.",
    ["version", "peer", "service"],
)


_M = TypeVar("_M", bound=MetricWrapperBase)


class Children(Generic[_M]):
    """A labelled metric's children, each looked up once: `labels()` validates and
    locks on every call, a dict hit does not; it showed in a search's CPU
    (docs/benchmarks.md, "Search at one client, part 2"). For hot paths only, and
    only with label values from a small fixed set (never raw client input).

        REQUESTS = Children(HTTP_REQUESTS)
        REQUESTS("/search", "GET", "200").inc()
    """

    def __init__(self, metric: _M) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], _M] = {}

    def __call__(self, *values: str) -> _M:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


def set_build_info(peer: str, service: str) -> None:
    BUILD_INFO.labels(version=__version__, peer=peer, service=service).set(1)


def serve_metrics(host: str, port: int) -> None:
    """Expose the default registry on http://host:port/metrics (a daemon thread).

    Port 0 means metrics are off for this process.
    """
    if port == 0:
        return
    start_http_server(port, addr=host)
    logger.info("metrics on http://%s:%d/metrics", host, port)
