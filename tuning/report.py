"""Stored sweep results → ``summary.csv``, ``summary.md`` and ``figure.png``.

Reads every trial's ``result.json`` under a sweep folder (no Ray needed), keeps one value
per (setting, dataset size, seed or run) — a trial rerun after a crash or a resume
reports the same deterministic values again — and summarizes across seeds: the mean with
its 10th and 90th percentiles, as in the paper's figures. The CSV has one row per
(setting, size); the table and the plot place each at the experiment's (curve, x).
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path

from tuning.aggregate import Summary, summarize
from tuning.base import SweepExperiment
from tuning.kinds import experiment_from_dict

CSV_NAME, TABLE_NAME, PLOT_NAME = "summary.csv", "summary.md", "figure.png"
#: Name of the file recording which experiment a sweep folder holds.
EXPERIMENT_FILE = "experiment.json"


class ReportError(ValueError):
    """A folder that holds no readable sweep."""


def save_experiment(folder: Path, experiment: SweepExperiment) -> None:
    """Records the experiment beside its results so :func:`write_report` can redraw it."""
    _write_atomically(folder / EXPERIMENT_FILE, json.dumps(experiment.to_dict(), indent=2))


def load_saved_experiment(folder: Path) -> SweepExperiment:
    path = folder / EXPERIMENT_FILE
    if not path.is_file():
        raise ReportError(f"{folder} holds no sweep (no {EXPERIMENT_FILE})")
    data = json.loads(path.read_text())
    try:
        return experiment_from_dict(data)
    except (TypeError, ValueError) as err:
        raise ReportError(f"{path}: not a readable experiment: {err}") from None


def collect(folder: Path) -> list[tuple[str, int, str, float]]:
    """``(setting, size, seed, value)`` rows from every trial under ``folder``."""
    values: dict[tuple[str, int, str], float] = {}
    for result_file in sorted(folder.glob("*/result.json")):
        params_file = result_file.with_name("params.json")
        if not params_file.is_file():
            continue
        trial = json.loads(params_file.read_text())["trial"]
        for line in result_file.read_text().splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            setting = row.get("setting", trial["setting"])
            for seed, value in row.get("values", {}).items():
                values[(setting, int(row["size"]), seed)] = value
    return [(s, size, seed, v) for (s, size, seed), v in sorted(values.items())]


def write_report(folder: Path) -> dict[str, Path]:
    """Writes the CSV, markdown table and PNG plot of the sweep in ``folder``."""
    folder = Path(folder).expanduser().resolve()
    experiment = load_saved_experiment(folder)
    rows = collect(folder)
    if not rows:
        raise ReportError(f"{folder} holds no finished trial results yet")
    summaries = summarize((setting, size, v) for setting, size, _, v in rows)
    order = {label: i for i, label in enumerate(s.label for s in experiment.settings)}
    summaries.sort(key=lambda s: (s.epochs, order.get(s.method, len(order))))
    paths = {
        "csv": folder / CSV_NAME,
        "table": folder / TABLE_NAME,
        "plot": folder / PLOT_NAME,
    }
    _write_atomically(paths["csv"], _csv(summaries, experiment))
    _write_atomically(paths["table"], markdown_table(summaries, experiment))
    _plot(summaries, experiment, paths["plot"])
    return paths


def _csv(summaries: list[Summary], experiment: SweepExperiment) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    # Experiments that report Table 2's ± spread get the standard deviation as a column.
    with_std = getattr(experiment, "spread", None) == "std"
    writer.writerow(
        ["setting", experiment.size_name, "mean", "p10", "p90", "seeds"] + ["std"] * with_std
    )
    for s in summaries:
        row = [s.method, s.epochs, f"{s.mean:.4f}", f"{s.p10:.4f}", f"{s.p90:.4f}", s.seeds]
        writer.writerow(row + [f"{s.std:.4f}"] * with_std)
    return out.getvalue()


def _points(
    summaries: list[Summary], experiment: SweepExperiment
) -> dict[tuple[str, float], Summary]:
    """(curve, x) → summary, as the experiment draws them."""
    return {experiment.point(s.method, s.epochs): s for s in summaries}


def _x_text(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def markdown_table(summaries: list[Summary], experiment: SweepExperiment) -> str:
    """One row per x, one ``mean [p10, p90]`` column per curve (and the experiment's gap)."""
    points = _points(summaries, experiment)
    curves = [c for c in experiment.curves() if any(key[0] == c for key in points)]
    gap = getattr(experiment, "gap", None)
    gap_header = [f"{gap[0]} − {gap[1]}"] if gap else []
    unit = "seeds" if experiment.kind == "rl" else "runs"
    # Table 2 gives mean ± spread (the standard deviation) over restarts.
    with_std = getattr(experiment, "spread", None) == "std"
    spread = " ± std" if with_std else ""
    lines = [
        f"# {experiment.name}: {experiment.y_label}, mean{spread} over {unit} "
        "[10th, 90th percentile]",
        "",
        f"| {experiment.x_label()} | " + " | ".join(curves + gap_header) + f" | {unit} |",
        "|---:|" + "---:|" * (len(curves) + len(gap_header)) + "---:|",
    ]
    for x in sorted({key[1] for key in points}):
        cells = [
            (
                f"{c.mean:.3f}"
                + (f" ± {c.std:.3f}" if with_std else "")
                + f" [{c.p10:.3f}, {c.p90:.3f}]"
            )
            if (c := points.get((curve, x)))
            else "–"
            for curve in curves
        ]
        if gap:
            first, second = points.get((gap[0], x)), points.get((gap[1], x))
            cells.append(f"{first.mean - second.mean:+.3f}" if first and second else "–")
        present = [c for curve in curves if (c := points.get((curve, x)))]
        seeds = max(c.seeds for c in present)
        failed = sum(c.failed for c in present)
        count = f"{seeds} ({failed} failed)" if failed else str(seeds)
        lines.append(f"| {_x_text(x)} | " + " | ".join(cells) + f" | {count} |")
    baselines = _baselines(experiment)
    if baselines:
        lines.append("")
        lines += [
            f"- {label}: {value:.3f} (exact, no training)" for label, value in baselines.items()
        ]
    return "\n".join(lines) + "\n"


def _baselines(experiment: SweepExperiment) -> dict[str, float]:
    """Reference values drawn beside the curves (the restricted policy alone), if any."""
    baselines = getattr(experiment, "baselines", None)
    return baselines() if baselines is not None else {}


def _plot(summaries: list[Summary], experiment: SweepExperiment, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = _points(summaries, experiment)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for curve in experiment.curves():
        xs = sorted(x for c, x in points if c == curve)
        if not xs:
            continue
        rows = [points[(curve, x)] for x in xs]
        mean = [r.mean for r in rows]
        low = [r.mean - r.p10 for r in rows]
        high = [r.p90 - r.mean for r in rows]
        ax.errorbar(xs, mean, yerr=[low, high], marker="o", markersize=3, capsize=3, label=curve)
    for (label, value), style in zip(
        _baselines(experiment).items(), ("--", ":", "-."), strict=False
    ):
        ax.axhline(value, linestyle=style, linewidth=1.2, color="gray", label=label)
    ax.set_xlabel(experiment.x_label())
    ax.set_ylabel(experiment.y_label)
    ax.set_title(f"{experiment.name}: mean, 10th–90th percentile bars")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(fd)
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def _write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)
