"""peerfind.metrics.Children: one child per label set, looked up once."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, generate_latest

from peerfind.metrics import Children


def test_children_are_the_metric_children_and_are_reused() -> None:
    registry = CollectorRegistry()
    counter = Counter("t_total", "test", ["a", "b"], registry=registry)
    children = Children(counter)
    first = children("x", "y")
    assert children("x", "y") is first
    assert first is counter.labels("x", "y")
    children("x", "y").inc()
    children("x", "z").inc(2)
    text = generate_latest(registry).decode()
    assert 't_total{a="x",b="y"} 1.0' in text
    assert 't_total{a="x",b="z"} 2.0' in text
