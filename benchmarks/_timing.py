"""Shared timing helper for the benchmark scripts (median of repeats after a warm-up)."""

from __future__ import annotations

import statistics
import time


def timeit(fn, repeat: int = 5, warmup: int = 1, min_time: float = 0.05) -> float:
    """Median seconds per call; each sample loops until at least `min_time` has passed."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        n, t0 = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            dt = time.perf_counter() - t0
            if dt >= min_time:
                break
        samples.append(dt / n)
    return statistics.median(samples)
