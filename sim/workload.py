"""Files, where their copies are, and which ones are asked for.

For each replication class r (a fraction of the peers), `files_per_class` files are
placed on max(1, round(r * N)) peers each, chosen at random. A query asks for one file
of a class by its full name (names are unique, so every hit is a copy of it), chosen
uniformly or by a Zipf law over the class's files.
"""

from __future__ import annotations

import bisect
import itertools
import random
from dataclasses import dataclass

from sim.network import SimNetwork

__all__ = ["POPULARITIES", "Catalogue", "place"]

POPULARITIES = ("uniform", "zipf")
ZIPF_S = 1.0


@dataclass(frozen=True, slots=True)
class Catalogue:
    holders: dict[str, frozenset[int]]  # file name -> peer indexes holding it
    by_class: dict[float, list[str]]

    def picker(self, replication: float, popularity: str, rng: random.Random):  # type: ignore[no-untyped-def]
        names = self.by_class[replication]
        if popularity == "uniform":
            return lambda: rng.choice(names)
        if popularity != "zipf":
            raise ValueError(f"unknown popularity {popularity!r}")
        weights = [1 / (rank**ZIPF_S) for rank in range(1, len(names) + 1)]
        cumulative = list(itertools.accumulate(weights))
        return lambda: names[bisect.bisect(cumulative, rng.random() * cumulative[-1])]


def place(
    net: SimNetwork, classes: tuple[float, ...], files_per_class: int, seed: int
) -> Catalogue:
    rng = random.Random(seed)
    n = len(net.peers)
    holders: dict[str, frozenset[int]] = {}
    by_class: dict[float, list[str]] = {}
    for r in classes:
        copies = max(1, round(r * n))
        names = by_class[r] = []
        for i in range(files_per_class):
            name = f"r{r:g}-file{i:03d}.dat"
            names.append(name)
            chosen = rng.sample(range(n), copies)
            holders[name] = frozenset(chosen)
            for index in chosen:
                peer = net.peers[index]
                peer.files.append(name)
                peer.lowered.append(name.casefold())
    return Catalogue(holders, by_class)
