"""Shared benchmark helpers: best-of-N wall time, peak RSS of a child, and the row format.

Each `bench/bench_*.py` exposes `run(quick: bool = False) -> list[dict]`; each row is
`row(...)` below. `python -m bench.run` runs them all and prints one markdown table.
"""
from __future__ import annotations

import time
from typing import Callable


def best_of(fn: Callable[[], object], repeat: int = 3) -> tuple[float, object]:
    """Best wall time over `repeat` calls (seconds) and the last return value."""
    best = float("inf")
    out = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def row(benchmark: str, seconds: float, *, floor_s: float | None = None,
        baseline: str | None = None, baseline_s: float | None = None,
        note: str = "") -> dict:
    """One table row. `ratio` = baseline_s / seconds (> 1 means execal is faster)."""
    return {
        "benchmark": benchmark,
        "seconds": seconds,
        "floor_s": floor_s,
        "meets_floor": None if floor_s is None else seconds <= floor_s,
        "baseline": baseline,
        "baseline_s": baseline_s,
        "ratio": (baseline_s / seconds) if (baseline_s and seconds) else None,
        "note": note,
    }
