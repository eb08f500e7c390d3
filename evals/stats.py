"""Small, dependency-free statistics for eval reports (deterministic: seeded resampling)."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a proportion (sane at 0/n and n/n, unlike the normal one)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation (numpy's default)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def bootstrap_mean_ci(
    values: Sequence[float], *, iterations: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean."""
    if not values:
        return (0.0, 0.0)
    if len(values) == 1:
        return (values[0], values[0])
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(iterations))
    tail = (1 - confidence) / 2 * 100
    return (percentile(means, tail), percentile(means, 100 - tail))


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value on the discordant pairs (b: A only, c: B only)."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail: float = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_bootstrap(
    diffs: Sequence[float], *, iterations: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float, float, float]:
    """Mean paired difference, its interval, and a two-sided bootstrap p-value for 0."""
    if not diffs:
        return (0.0, 0.0, 0.0, 1.0)
    n = len(diffs)
    mean = sum(diffs) / n
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(diffs, k=n)) / n for _ in range(iterations))
    tail = (1 - confidence) / 2 * 100
    low, high = percentile(means, tail), percentile(means, 100 - tail)
    if all(d == 0 for d in diffs):
        return (0.0, 0.0, 0.0, 1.0)
    # Shift the resampled means to the null (mean 0) and count as-extreme outcomes.
    extreme = sum(1 for m in means if abs(m - mean) >= abs(mean))
    return (mean, low, high, min(1.0, (extreme + 1) / (iterations + 1)))
