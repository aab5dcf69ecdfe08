"""The few statistics every scenario uses: percentiles, background load, ratios."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any


def percentiles_ms(samples_us: Sequence[float]) -> tuple[float, float, float]:
    """p50, p90, p99 in milliseconds (inclusive method; NaN if there are no samples)."""
    if len(samples_us) < 2:
        value = samples_us[0] / 1000 if samples_us else float("nan")
        return value, value, value
    cuts = statistics.quantiles(samples_us, n=100, method="inclusive")
    return cuts[49] / 1000, cuts[89] / 1000, cuts[98] / 1000


def background_s(point: dict[str, Any], ours: Iterable[str]) -> float:
    """CPU the rest of the machine used during a point: machine-wide busy CPU minus the
    bench's own processes (the point's ``ours`` CPU-second fields)."""
    return max(0.0, float(point["machine_busy_cpu_s"]) - sum(float(point[k]) for k in ours))


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing, NaN or b is not positive."""
    if a is None or b is None or math.isnan(a) or math.isnan(b) or b <= 0:
        return None
    return a / b


def errors(points: Sequence[dict[str, Any]], keep: int = 5) -> dict[str, Any]:
    """The points' failed requests: how many, and the first ``keep`` samples."""
    samples = [s for p in points for s in p["error_samples"]][:keep]
    return {"errors": sum(p["errors"] for p in points), "error_samples": samples}


def ok_replies(points: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The successful replies of some client points."""
    return [r for p in points for r in p["replies"] if r["error"] is None]
