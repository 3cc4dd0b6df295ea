"""peerfind benchmarks: every hot path against a baseline measured in the same run.

    make bench                          # the full set (under ten minutes on 2 vCPUs)
    python -m bench --quick             # every family, lighter, for iteration
    python -m bench --only search       # one family (repeat --only for more)

Absolute times on a shared machine drift from run to run, so each result is a
ratio against a baseline taken in the same run, on the same machine, with the
same process settings. Results go to bench/results/latest.json and latest.png;
docs/benchmarks.md explains each benchmark. Nothing here runs under `make test`.
"""

__all__: list[str] = []
