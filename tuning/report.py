"""Stored sweep results → ``summary.csv``, ``summary.md`` and ``figure.png``.

Reads every trial's ``result.json`` under a sweep folder (no Ray needed; local or on an
object store, :mod:`tuning.storage`), keeps one value per (setting, dataset size, seed or
run) — a trial rerun after a crash or a resume reports the same deterministic values again
— and summarizes across seeds: the mean with its 10th and 90th percentiles, as in the
paper's figures. The CSV has one row per (setting, size); the table and the plot place each
at the experiment's (curve, x). The table ends with what a partial sweep is missing
(compared with the trials its saved experiment plans) and with how many trials ran on how
many Ray nodes.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from tuning.aggregate import Summary, summarize
from tuning.base import SweepExperiment
from tuning.kinds import experiment_from_dict
from tuning.storage import Location, check_readable, resolve

CSV_NAME, TABLE_NAME, PLOT_NAME = "summary.csv", "summary.md", "figure.png"
#: Name of the file recording which experiment a sweep folder holds.
EXPERIMENT_FILE = "experiment.json"
#: Files a report reads at once (on an object store each read is a request of its own).
READERS = 16
#: Tune's file of a trial's result rows (JSON lines), in the trial's folder.
RESULT_FILE = "result.json"
#: Rows a trial had stored before a ``--resume`` ran it again (:mod:`tuning.resume`).
EARLIER_RESULTS_PREFIX = "result-before-resume-"
#: The result-row key naming the Ray node that reported the row (its hex node id).
NODE_KEY = "node_id"


class ReportError(ValueError):
    """A folder that holds no readable sweep."""


@dataclass(frozen=True)
class Report:
    """What :func:`write_report` wrote."""

    paths: dict[str, str]
    """``csv``, ``table``, ``plot`` → where each was written (a local path or a URI)."""
    table: str
    """The text of ``summary.md``."""
    missing: list[str] = field(default_factory=list)
    """Lines saying what a partial sweep has no results for; empty when it is complete."""


@dataclass(frozen=True)
class TrialResults:
    """One trial folder: the trial dict it was given (``params.json``) and its result rows."""

    trial: dict[str, Any]
    rows: list[dict[str, Any]]
    folder: str = ""
    """The trial folder's name (Tune's ``relative_logdir``)."""
    params: dict[str, Any] = field(default_factory=dict)
    """Everything ``params.json`` holds: ``trial`` and, in a search, the sampled value."""


def save_experiment(folder: str | os.PathLike[str] | Location, experiment: SweepExperiment) -> None:
    """Records the experiment beside its results so :func:`write_report` can redraw it."""
    (resolve(folder) / EXPERIMENT_FILE).write_text(json.dumps(experiment.to_dict(), indent=2))


def load_saved_experiment(folder: str | os.PathLike[str] | Location) -> SweepExperiment:
    folder = resolve(folder, option=None)
    path = folder / EXPERIMENT_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ReportError(f"{folder} holds no sweep (no {EXPERIMENT_FILE})") from None
    except (OSError, json.JSONDecodeError) as err:
        raise ReportError(f"cannot read {path}: {err}") from None
    try:
        return experiment_from_dict(data)
    except (TypeError, ValueError) as err:
        raise ReportError(f"{path}: not a readable experiment: {err}") from None


def read_trials(folder: str | os.PathLike[str] | Location) -> list[TrialResults]:
    """Every trial folder under ``folder`` that has its ``params.json`` and results (a trial
    whose ``params.json`` Tune is still writing, in a running sweep, is left out): its
    ``result.json`` after the rows kept from before each ``--resume``
    (:data:`EARLIER_RESULTS_PREFIX`), so that a later row replaces an earlier one. The
    files are read side by side (on an object store, each is a request)."""
    folder = resolve(folder, option=None)
    files: dict[str, list[str]] = {}
    for path in folder.files():
        trial_folder, _, name = path.partition("/")
        if name and "/" not in name:
            files.setdefault(trial_folder, []).append(name)
    reads = {
        trial_folder: [
            "params.json",
            *sorted(n for n in names if n.startswith(EARLIER_RESULTS_PREFIX)),
            RESULT_FILE,
        ]
        for trial_folder, names in sorted(files.items())
        if "params.json" in names and RESULT_FILE in names
    }
    paths = [f"{trial_folder}/{n}" for trial_folder, names in reads.items() for n in names]
    with ThreadPoolExecutor(max_workers=READERS) as pool:
        texts = dict(zip(paths, pool.map(_read_or_none, [folder / p for p in paths]), strict=True))
    trials = []
    for trial_folder, names in reads.items():
        params, *results = (texts[f"{trial_folder}/{name}"] for name in names)
        if params is None or None in results:  # a trial folder being replaced right now
            continue
        try:
            config = json.loads(params)
        except json.JSONDecodeError:  # Tune writing a new trial's params.json right now
            continue
        rows = [row for text in results for row in parse_rows(text)]
        trials.append(TrialResults(config["trial"], rows, trial_folder, config))
    return trials


def _read_or_none(location: Location) -> str | None:
    try:
        return location.read_text()
    except FileNotFoundError:
        return None


def parse_rows(text: str) -> list[dict[str, Any]]:
    """The rows of a ``result.json`` (JSON lines); a last line still being appended (a
    running sweep's) is left out."""
    lines = [line for line in text.splitlines() if line.strip()]
    rows = []
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i < len(lines) - 1:
                raise
    return rows


def collect(
    folder: str | os.PathLike[str] | Location, trials: list[TrialResults] | None = None
) -> list[tuple[str, int, str, float]]:
    """``(setting, size, seed, value)`` rows from every trial under ``folder`` (or from
    ``trials``, already read from it)."""
    values = per_seed(read_trials(folder) if trials is None else trials)
    return [(s, size, seed, v) for (s, size, seed), (v, _) in sorted(values.items())]


def per_seed(
    trials: list[TrialResults],
) -> dict[tuple[str, int, str], tuple[float, dict[str, Any]]]:
    """``(setting, size, seed) → (value, the row that reported it)`` over ``trials``; a
    later row replaces an earlier one (a trial run again after ``--resume``)."""
    values: dict[tuple[str, int, str], tuple[float, dict[str, Any]]] = {}
    for found in trials:
        for row in found.rows:
            setting = row.get("setting", found.trial["setting"])
            for seed, value in row.get("values", {}).items():
                values[(setting, int(row["size"]), seed)] = (value, row)
    return values


def summary_table(folder: str | os.PathLike[str] | Location) -> str:
    """The text ``summary.md`` of the sweep in ``folder`` would hold, read from its trials
    (nothing written)."""
    return _summarized(folder)[3]


def _summarized(
    folder: str | os.PathLike[str] | Location,
) -> tuple[Location, SweepExperiment, list[Summary], str, list[str]]:
    """``(folder, experiment, summaries, markdown table, missing lines)`` of a stored sweep."""
    folder = resolve(folder, option=None)
    check_readable(folder)
    experiment = load_saved_experiment(folder)
    trials = read_trials(folder)
    rows = collect(folder, trials)
    if not rows:
        raise ReportError(f"{folder} holds no finished trial results yet")
    summaries = summarize((setting, size, v) for setting, size, _, v in rows)
    order = {label: i for i, label in enumerate(s.label for s in experiment.settings)}
    summaries.sort(key=lambda s: (s.size, order.get(s.setting, len(order))))
    missing = missing_lines(experiment, trials)
    footer = ["", *missing] if missing else []
    nodes = nodes_line(trials)
    footer += ["", nodes] if nodes else []
    table = markdown_table(summaries, experiment) + "".join(f"{line}\n" for line in footer)
    return folder, experiment, summaries, table, missing


def write_report(folder: str | os.PathLike[str] | Location) -> Report:
    """Writes the CSV, markdown table and PNG plot of the sweep in ``folder`` (a local
    path or a storage URI), beside its results."""
    folder, experiment, summaries, table, missing = _summarized(folder)
    paths = {"csv": folder / CSV_NAME, "table": folder / TABLE_NAME, "plot": folder / PLOT_NAME}
    paths["csv"].write_text(_csv(summaries, experiment))
    paths["table"].write_text(table)
    paths["plot"].write_bytes(_plot(summaries, experiment))
    return Report({kind: str(path) for kind, path in paths.items()}, table, missing)


def _labels(trial: dict[str, Any]) -> list[str]:
    """The settings a trial trains: one, or (logistic) the several it shares out."""
    return [s["label"] for s in trial["settings"]] if "settings" in trial else [trial["setting"]]


def _seeds(trial: dict[str, Any]) -> list[int]:
    """A trial's seeds: its ``seeds`` (RL), or its one ``seed`` (LM, BERT). A logistic trial
    trains every Monte Carlo run of its sizes at once from one base ``seed``: its runs are
    all there or none, so it names no seeds."""
    if "seeds" in trial:
        return list(trial["seeds"])
    return [trial["seed"]] if "seed" in trial and "runs" not in trial else []


def planned(trial: dict[str, Any]) -> set[tuple[str, int]]:
    """The (setting, size) a trial is to report."""
    return {(label, int(size)) for label in _labels(trial) for size in trial["sizes"]}


def reported(trial: dict[str, Any], rows: Iterable[dict[str, Any]]) -> set[tuple[str, int]]:
    """The (setting, size) a trial has reported. A trial of several settings reports each
    on its own row; a trial of one may report several curves (an LM's metrics, BERT's dev
    and test), or none, at a size: any row at that size counts."""
    labels = _labels(trial)
    if "settings" in trial:
        return {(row["setting"], int(row["size"])) for row in rows if row.get("setting") in labels}
    return {(labels[0], int(row["size"])) for row in rows if "size" in row}


def missing_results(
    experiment: SweepExperiment, trials: list[TrialResults]
) -> tuple[int, dict[str, dict[int, set[int]]]]:
    """The planned trials (``experiment.trials()``) that have not reported every size, and
    for each setting the sizes without results → the seeds they lack (empty for a logistic
    trial, whose runs are all there or none)."""
    done: dict[tuple[str, str], set[tuple[str, int]]] = {}
    for found in trials:
        key = (found.trial["setting"], found.trial["tag"])
        done.setdefault(key, set()).update(reported(found.trial, found.rows))
    unfinished = 0
    missing: dict[str, dict[int, set[int]]] = {}
    for trial in experiment.trials():
        absent = planned(trial) - done.get((trial["setting"], trial["tag"]), set())
        unfinished += bool(absent)
        for label, size in absent:
            missing.setdefault(label, {}).setdefault(size, set()).update(_seeds(trial))
    return unfinished, missing


def missing_lines(experiment: SweepExperiment, trials: list[TrialResults]) -> list[str]:
    """What a partial sweep lacks, as markdown lines (none when it is complete): e.g.
    ``- IMM: epochs 6 (seeds 20–39)``."""
    unfinished, missing = missing_results(experiment, trials)
    if not missing:
        return []
    total = len(experiment.trials())
    lines = [
        f"**Partial sweep:** {unfinished} of {total} trials have not finished; no results for:"
    ]
    order = [s.label for s in experiment.settings]
    for label in sorted(missing, key=lambda x: order.index(x) if x in order else len(order)):
        by_seeds: dict[frozenset[int], list[int]] = {}
        for size, seeds in sorted(missing[label].items()):
            by_seeds.setdefault(frozenset(seeds), []).append(size)
        parts = []
        for seeds, sizes in by_seeds.items():
            part = f"{experiment.size_name} {_ranges(sizes)}"
            if seeds:
                part += f" ({'seed' if len(seeds) == 1 else 'seeds'} {_ranges(sorted(seeds))})"
            parts.append(part)
        lines.append(f"- {label}: {'; '.join(parts)}")
    return lines


def _ranges(values: list[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` → ``0–2, 5, 7, 8``: three or more consecutive values as a range."""
    runs: list[list[int]] = []
    for value in values:
        if runs and value == runs[-1][-1] + 1:
            runs[-1].append(value)
        else:
            runs.append([value])
    return ", ".join(f"{r[0]}–{r[-1]}" if len(r) > 2 else ", ".join(map(str, r)) for r in runs)


def nodes_line(trials: list[TrialResults]) -> str | None:
    """``16 trials ran on 2 nodes.``, from the ``node_id`` of the result rows; ``None`` for
    a sweep whose rows carry none (stored before trials reported their node)."""
    ran = [found for found in trials if found.rows]
    recorded = [found for found in ran if any(NODE_KEY in row for row in found.rows)]
    if not recorded:
        return None
    nodes = {row[NODE_KEY] for found in recorded for row in found.rows if NODE_KEY in row}
    line = f"{_count(len(recorded), 'trial')} ran on {_count(len(nodes), 'node')}"
    unrecorded = len(ran) - len(recorded)
    return line + (f"; {unrecorded} more recorded no node." if unrecorded else ".")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _csv(summaries: list[Summary], experiment: SweepExperiment) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    # Experiments that report Table 2's ± spread get the standard deviation as a column.
    with_std = experiment.spread == "std"
    writer.writerow(
        ["setting", experiment.size_name, "mean", "p10", "p90", "seeds"] + ["std"] * with_std
    )
    for s in summaries:
        row = [s.setting, s.size, f"{s.mean:.4f}", f"{s.p10:.4f}", f"{s.p90:.4f}", s.seeds]
        writer.writerow(row + [f"{s.std:.4f}"] * with_std)
    return out.getvalue()


def _points(
    summaries: list[Summary], experiment: SweepExperiment
) -> dict[tuple[str, float], Summary]:
    """(curve, x) → summary, as the experiment draws them."""
    return {experiment.point(s.setting, s.size): s for s in summaries}


def _x_text(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def markdown_table(summaries: list[Summary], experiment: SweepExperiment) -> str:
    """One row per x, one ``mean [p10, p90]`` column per curve (and the experiment's gap)."""
    points = _points(summaries, experiment)
    curves = [c for c in experiment.curves() if any(key[0] == c for key in points)]
    gap = experiment.gap
    gap_header = [f"{gap[0]} − {gap[1]}"] if gap else []
    unit = experiment.repeats_name
    # Table 2 gives mean ± spread (the standard deviation) over restarts.
    with_std = experiment.spread == "std"
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
    baselines = experiment.baselines()
    if baselines:
        lines.append("")
        lines += [
            f"- {label}: {value:.3f} (exact, no training)" for label, value in baselines.items()
        ]
    return "\n".join(lines) + "\n"


def _plot(summaries: list[Summary], experiment: SweepExperiment) -> bytes:
    """The figure as PNG bytes (written through the storage's filesystem)."""
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
        experiment.baselines().items(), ("--", ":", "-."), strict=False
    ):
        ax.axhline(value, linestyle=style, linewidth=1.2, color="gray", label=label)
    ax.set_xlabel(experiment.x_label())
    ax.set_ylabel(experiment.y_label)
    ax.set_title(f"{experiment.name}: mean, 10th–90th percentile bars")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=120)
    plt.close(fig)
    return png.getvalue()
