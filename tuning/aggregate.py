"""Seeds → statistics: the mean over seeds of each seed's mean reward, and its percentiles.

Seeds are the unit of Monte Carlo: every setting is summarized by the mean and
the 10th and 90th percentiles *across seeds*, as in the paper's figures.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Summary:
    """Across-seed statistics at one (method, epochs) setting."""

    method: str
    epochs: int
    mean: float
    p10: float
    p90: float
    seeds: int
    """Seeds (or runs) that count: those whose value is finite."""
    failed: int = 0
    """Seeds whose value is NaN (their training failed); left out of the statistics."""
    std: float = float("nan")
    """Sample standard deviation across seeds (ddof 1; 0 for one seed): the ± of Table 2."""


def summarize(records: Iterable[tuple[str, int, float]]) -> list[Summary]:
    """``(method, epochs, per-seed value)`` records → one :class:`Summary` per setting.

    Non-finite values (failed seeds) are counted in ``failed`` and left out of the mean
    and percentiles; a setting with no finite value has NaN statistics. Sorted by epochs,
    then method.
    """
    cells: dict[tuple[int, str], list[float]] = {}
    for method, epochs, value in records:
        cells.setdefault((epochs, method), []).append(value)
    summaries = []
    for (epochs, method), values in sorted(cells.items()):
        finite = [v for v in values if np.isfinite(v)]
        stats = (
            (float(np.mean(finite)), *map(float, np.percentile(finite, [10, 90])))
            if finite
            else (float("nan"),) * 3
        )
        std = float(np.std(finite, ddof=1)) if len(finite) > 1 else (0.0 if finite else math.nan)
        summaries.append(
            Summary(method, epochs, *stats, len(finite), failed=len(values) - len(finite), std=std)
        )
    return summaries


def format_table(rows: Iterable[Summary]) -> str:
    """A right-aligned plain-text table of summaries."""
    header = ("epochs", "method", "mean reward", "p10", "p90", "seeds")
    lines = [header] + [
        (
            str(r.epochs),
            r.method,
            f"{r.mean:.3f}",
            f"{r.p10:.3f}",
            f"{r.p90:.3f}",
            f"{r.seeds} ({r.failed} failed)" if r.failed else str(r.seeds),
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    lines.insert(1, tuple("-" * w for w in widths))
    return "\n".join(
        "  ".join(cell.rjust(w) for cell, w in zip(line, widths, strict=True)) for line in lines
    )
