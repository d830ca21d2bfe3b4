"""Seeds → statistics: the mean over seeds (or runs) of each one's value, and its percentiles.

Seeds are the unit of Monte Carlo: every (setting, dataset size) is summarized by the mean
and the 10th and 90th percentiles *across seeds*, as in the paper's figures. A value is what
the experiment measures: an RL seed's mean reward, a logistic run's accuracy, a perplexity.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Summary:
    """Across-seed statistics of one setting at one dataset size."""

    setting: str
    """The setting's label (the ``setting`` column of ``summary.csv``)."""
    size: int
    """The dataset size: epochs (RL, LM, BERT) or data points n (logistic)."""
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
    """``(setting, size, per-seed value)`` records → one :class:`Summary` per (setting, size).

    Non-finite values (failed seeds) are counted in ``failed`` and left out of the mean
    and percentiles; a cell with no finite value has NaN statistics. Sorted by size, then
    setting.
    """
    cells: dict[tuple[int, str], list[float]] = {}
    for setting, size, value in records:
        cells.setdefault((size, setting), []).append(value)
    summaries = []
    for (size, setting), values in sorted(cells.items()):
        finite = [v for v in values if np.isfinite(v)]
        stats = (
            (float(np.mean(finite)), *map(float, np.percentile(finite, [10, 90])))
            if finite
            else (float("nan"),) * 3
        )
        std = float(np.std(finite, ddof=1)) if len(finite) > 1 else (0.0 if finite else math.nan)
        summaries.append(
            Summary(setting, size, *stats, len(finite), failed=len(values) - len(finite), std=std)
        )
    return summaries


def format_table(rows: Iterable[Summary]) -> str:
    """A right-aligned plain-text table of summaries: RL's, as ``imm-ray train rl`` prints
    them (its sizes are epochs, its settings methods, its values mean rewards)."""
    header = ("epochs", "method", "mean reward", "p10", "p90", "seeds")
    lines = [header] + [
        (
            str(r.size),
            r.setting,
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
