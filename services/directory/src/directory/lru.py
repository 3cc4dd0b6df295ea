"""A map bounded in size that forgets its oldest entries first (seen queries, rate buckets)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

__all__ = ["BoundedLru"]

K = TypeVar("K")
V = TypeVar("V")


class BoundedLru(Generic[K, V]):
    """Entries in the order they were last put; past `capacity`, the oldest is dropped."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._data: OrderedDict[K, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def get(self, key: K) -> V | None:
        return self._data.get(key)

    def pop(self, key: K, default: V) -> V:
        return self._data.pop(key, default)

    def put(self, key: K, value: V) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.capacity:
            self._data.popitem(last=False)

    def oldest(self) -> V | None:
        return next(iter(self._data.values()), None)

    def drop_oldest(self) -> None:
        self._data.popitem(last=False)
