"""What a benchmark entry of the results is: its kind and its name, defined once. Pure Python.

`toolkit eval` names each loaded benchmark by its kind, suffixed `_2`, `_3`… when one kind appears more
than once (`domain`, `domain_2`): the names key the results, the JSON and the MLflow metrics. The kind is
what every reader needs (which gate a benchmark feeds), so it is carried as a `BenchmarkKey` where the
benchmarks are at hand, and recovered by `key_of` (the exact inverse of the naming) where only the
results are (a `toolkit eval --json` file). Nothing else splits a name.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

KINDS = ("sugarcrepe_pp", "sugarcrepe", "winoground", "retrieval", "zeroshot", "domain")
_NAME = re.compile(rf"^(?P<kind>{'|'.join(KINDS)})(?:_(?P<n>[2-9]|[1-9][0-9]+))?$")


class BenchmarkKey(NamedTuple):
    kind: str  # one of KINDS
    name: str  # the results key: the kind, or kind_N for its N-th benchmark (N >= 2)


def benchmark_keys(kinds: Sequence[str]) -> list[BenchmarkKey]:
    """The key of each benchmark of an evaluation, given their kinds in order."""
    keys: list[BenchmarkKey] = []
    for position, kind in enumerate(kinds):
        seen = sum(1 for earlier in kinds[:position] if earlier == kind)
        keys.append(BenchmarkKey(kind, kind if seen == 0 else f"{kind}_{seen + 1}"))
    return keys


def key_of(name: str) -> BenchmarkKey | None:
    """The key of a results entry named by `benchmark_keys`; None for a name it never makes."""
    match = _NAME.match(name)
    return BenchmarkKey(match["kind"], name) if match else None
