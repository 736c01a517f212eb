"""Pure helpers: sizes, percentiles and ratios (tested in tests/test_bench.py)."""

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

_SIZE = re.compile(r"(\d+(?:\.\d+)?)([kKmMgG]?)")
_MULTIPLIERS = {"": 1, "k": 1_000, "m": 1_000_000, "g": 1_000_000_000}


@dataclass(frozen=True)
class Size:
    """A data set size as the user wrote it (``1M``) and its number of taps."""

    label: str
    taps: int

    @property
    def slug(self) -> str:
        """The label as it may appear in a database or file name: ``1M`` -> ``1m``."""
        return self.label.lower().replace(".", "_")


def parse_sizes(text: str) -> list[Size]:
    """``"100k,1M,10M"`` -> sizes in the order given; raises ValueError naming the bad one."""
    sizes: list[Size] = []
    for part in text.split(","):
        label = part.strip()
        match = _SIZE.fullmatch(label)
        if not match:
            raise ValueError(f"{label!r} is not a size; write a number of taps such as 100k, 1M")
        taps = round(float(match[1]) * _MULTIPLIERS[match[2].lower()])
        if taps < 1:
            raise ValueError(f"{label!r} is not a size: it must be at least one tap")
        if any(size.taps == taps for size in sizes):
            raise ValueError(f"{label!r} is given twice")
        sizes.append(Size(label, taps))
    return sizes


def percentile(samples: Sequence[float], p: float) -> float:
    """The nearest-rank percentile: the smallest sample with at least p% of samples at or
    below it (no interpolation, so it is always a measured value)."""
    if not samples:
        raise ValueError("no samples")
    if not 0 < p <= 100:
        raise ValueError(f"percentile must be in (0, 100], not {p}")
    ordered = sorted(samples)
    rank = math.ceil(p / 100 * len(ordered))
    return ordered[max(rank, 1) - 1]


def summarize(samples: Sequence[float]) -> dict[str, float | int]:
    """Count, min, p50, p95, p99 and max of the samples (empty: just the count)."""
    if not samples:
        return {"n": 0}
    return {
        "n": len(samples),
        "min": min(samples),
        "p50": percentile(samples, 50),
        "p95": percentile(samples, 95),
        "p99": percentile(samples, 99),
        "max": max(samples),
    }


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator
