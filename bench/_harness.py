"""Benchmark conventions: measure knowlm's path and a baseline in the same process, print
absolute figures, then `name: ratio` as the last line (bigger is better unless stated)."""

from __future__ import annotations

import resource
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))


@contextmanager
def timer(results: dict, key: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    results[key] = time.perf_counter() - start


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def report(name: str, ratio: float, **figures: float | int | str) -> None:
    for key, value in figures.items():
        print(f"{key}: {value:.3f}" if isinstance(value, float) else f"{key}: {value}")
    print(f"{name}: {ratio:.2f}")
