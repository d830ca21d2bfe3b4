"""Stored sweep results → ``summary.csv``, ``summary.md`` and ``figure.png``.

Reads every trial's ``result.json`` under a sweep folder (no Ray needed), keeps one value
per (setting, λ, seed, epochs) — a trial rerun after a crash or a resume reports the same
deterministic values again — and summarizes across seeds: the mean of the per-seed mean
reward with its 10th and 90th percentiles, as in the paper's figures.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import tempfile
from pathlib import Path

from imm_ray.rl.imm_config import TargetSpec
from tuning.aggregate import Summary, summarize
from tuning.experiments import Experiment, Setting

CSV_NAME, TABLE_NAME, PLOT_NAME = "summary.csv", "summary.md", "figure.png"
#: Name of the file recording which experiment a sweep folder holds.
EXPERIMENT_FILE = "experiment.json"


class ReportError(ValueError):
    """A folder that holds no readable sweep."""


def save_experiment(folder: Path, experiment: Experiment) -> None:
    """Records the experiment beside its results so :func:`write_report` can redraw it."""
    _write_atomically(
        folder / EXPERIMENT_FILE, json.dumps(dataclasses.asdict(experiment), indent=2)
    )


def load_saved_experiment(folder: Path) -> Experiment:
    path = folder / EXPERIMENT_FILE
    if not path.is_file():
        raise ReportError(f"{folder} holds no sweep (no {EXPERIMENT_FILE})")
    data = json.loads(path.read_text())
    data["settings"] = tuple(
        Setting(**{**s, "target": TargetSpec(**s["target"])}) for s in data["settings"]
    )
    data["epochs"] = tuple(data["epochs"])
    return Experiment(**data)


def collect(folder: Path) -> list[tuple[str, int, int, float]]:
    """``(setting, epochs, seed, reward)`` rows from every trial under ``folder``."""
    values: dict[tuple[str, float, int, int], float] = {}
    for result_file in sorted(folder.glob("*/result.json")):
        params_file = result_file.with_name("params.json")
        if not params_file.is_file():
            continue
        trial = json.loads(params_file.read_text())["trial"]
        for line in result_file.read_text().splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            for seed, reward in row.get("rewards", {}).items():
                values[(trial["setting"], trial["lam"], int(seed), int(row["epoch"]))] = reward
    return [(s, epochs, seed, r) for (s, _, seed, epochs), r in sorted(values.items())]


def write_report(folder: Path) -> dict[str, Path]:
    """Writes the CSV, markdown table and PNG plot of the sweep in ``folder``."""
    folder = Path(folder).expanduser().resolve()
    experiment = load_saved_experiment(folder)
    rows = collect(folder)
    if not rows:
        raise ReportError(f"{folder} holds no finished trial results yet")
    summaries = summarize((setting, epochs, r) for setting, epochs, _, r in rows)
    order = {s.label: i for i, s in enumerate(experiment.settings)}
    summaries.sort(key=lambda s: (s.epochs, order.get(s.method, len(order))))
    paths = {
        "csv": folder / CSV_NAME,
        "table": folder / TABLE_NAME,
        "plot": folder / PLOT_NAME,
    }
    _write_atomically(paths["csv"], _csv(summaries))
    _write_atomically(paths["table"], markdown_table(summaries, experiment))
    _plot(summaries, experiment, paths["plot"])
    return paths


def _csv(summaries: list[Summary]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["setting", "epochs", "mean", "p10", "p90", "seeds"])
    for s in summaries:
        writer.writerow(
            [s.method, s.epochs, f"{s.mean:.4f}", f"{s.p10:.4f}", f"{s.p90:.4f}", s.seeds]
        )
    return out.getvalue()


def markdown_table(summaries: list[Summary], experiment: Experiment) -> str:
    """One row per dataset size, one ``mean [p10, p90]`` column per setting."""
    labels = [s.label for s in experiment.settings if any(x.method == s.label for x in summaries)]
    cell = {(s.epochs, s.method): s for s in summaries}
    lines = [
        f"# {experiment.name}: mean evaluation reward over seeds [10th, 90th percentile]",
        "",
        "| epochs | " + " | ".join(labels) + " | seeds |",
        "|---:|" + "---:|" * len(labels) + "---:|",
    ]
    for epochs in sorted({s.epochs for s in summaries}):
        cells = [
            f"{c.mean:.3f} [{c.p10:.3f}, {c.p90:.3f}]" if (c := cell.get((epochs, label))) else "–"
            for label in labels
        ]
        seeds = max(c.seeds for label in labels if (c := cell.get((epochs, label))))
        lines.append(f"| {epochs} | " + " | ".join(cells) + f" | {seeds} |")
    return "\n".join(lines) + "\n"


def _plot(summaries: list[Summary], experiment: Experiment, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    if experiment.x_axis == "lambda_ratio":
        ratio = {s.label: s.lambda_ratio for s in experiment.settings}
        curves = {
            f"{e} epochs": [s for s in summaries if s.epochs == e]
            for e in sorted({s.epochs for s in summaries})
        }
        xs = {name: [ratio[s.method] for s in rows] for name, rows in curves.items()}
        ax.set_xlabel("λ ratio r = λ / (1 + λ)")
    else:
        curves = {
            s.label: [x for x in summaries if x.method == s.label] for s in experiment.settings
        }
        xs = {name: [s.epochs for s in rows] for name, rows in curves.items()}
        ax.set_xlabel("Number of epochs")
    for name, rows in curves.items():
        if not rows:
            continue
        order = sorted(range(len(rows)), key=lambda i: xs[name][i])
        x = [xs[name][i] for i in order]
        mean = [rows[i].mean for i in order]
        low = [rows[i].mean - rows[i].p10 for i in order]
        high = [rows[i].p90 - rows[i].mean for i in order]
        ax.errorbar(x, mean, yerr=[low, high], marker="o", markersize=3, capsize=3, label=name)
    ax.set_ylabel("Average Reward")
    ax.set_title(f"{experiment.name}: mean over seeds, 10th–90th percentile bars")
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
