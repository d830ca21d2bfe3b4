"""Seeds → statistics: the mean over seeds of each seed's mean reward, and its percentiles.

Seeds are the unit of Monte Carlo (DESIGN.md): every setting is summarized by the mean and
the 10th and 90th percentiles *across seeds*, as in the paper's figures.
"""

from __future__ import annotations

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


def summarize(records: Iterable[tuple[str, int, float]]) -> list[Summary]:
    """``(method, epochs, per-seed value)`` records → one :class:`Summary` per setting.

    Sorted by epochs, then method.
    """
    cells: dict[tuple[int, str], list[float]] = {}
    for method, epochs, value in records:
        cells.setdefault((epochs, method), []).append(value)
    return [
        Summary(method, epochs, float(np.mean(v)), *map(float, np.percentile(v, [10, 90])), len(v))
        for (epochs, method), v in sorted(cells.items())
    ]


def format_table(rows: Iterable[Summary]) -> str:
    """A right-aligned plain-text table of summaries."""
    header = ("epochs", "method", "mean reward", "p10", "p90", "seeds")
    lines = [header] + [
        (str(r.epochs), r.method, f"{r.mean:.3f}", f"{r.p10:.3f}", f"{r.p90:.3f}", str(r.seeds))
        for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    lines.insert(1, tuple("-" * w for w in widths))
    return "\n".join(
        "  ".join(cell.rjust(w) for cell, w in zip(line, widths, strict=True)) for line in lines
    )
