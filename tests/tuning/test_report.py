"""The report of a stored sweep, from hand-written trial folders (no Ray): what a partial
sweep is missing, at the level each kind reports, and on how many nodes its trials ran."""

from __future__ import annotations

import json
from pathlib import Path

from imm_ray.cli import main
from imm_ray.supervised.logistic.train import Method
from tuning.lm import LMExperiment, LMSetting
from tuning.logistic import LogisticExperiment, LogisticSetting
from tuning.report import TABLE_NAME, read_trials, save_experiment, write_report
from tuning.rl import Experiment, Setting

RL = Experiment(
    name="tiny",
    settings=(Setting("No IMM", imm=False), Setting("IMM")),
    epochs=(3, 6),
    seeds=4,
    seeds_per_trial=2,
)


def store(folder: Path, experiment, rows_of) -> None:
    """Writes ``experiment.json`` and one Tune-like trial folder per planned trial for
    which ``rows_of(trial)`` gives rows (``None``: the trial never started)."""
    folder.mkdir(parents=True, exist_ok=True)
    save_experiment(folder, experiment)
    for i, trial in enumerate(experiment.trials()):
        rows = rows_of(trial)
        if rows is None:
            continue
        trial_folder = folder / f"0000{i}_{trial['tag']}"
        trial_folder.mkdir()
        (trial_folder / "params.json").write_text(json.dumps({"trial": trial}))
        (trial_folder / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))


def assert_partial(tmp_path, experiment, rows, unfinished: str, *missing: str) -> None:
    """With ``rows`` stored for ``experiment``'s trials, the report calls the sweep partial
    (``unfinished``: "N of M" trials not finished) and lists ``missing``."""
    store(tmp_path, experiment, rows)
    assert write_report(tmp_path).missing == [
        f"**Partial sweep:** {unfinished} trials have not finished; no results for:",
        *missing,
    ]


def rl_rows(trial, sizes=None, node=None):
    rows = []
    for size in trial["sizes"] if sizes is None else sizes:
        values = {str(seed): float(seed + size) for seed in trial["seeds"]}
        rows.append({"size": size, "values": values, **({"node_id": node} if node else {})})
    return rows


def test_a_complete_sweep_has_no_missing_line_and_ends_with_its_trials_and_nodes(tmp_path):
    nodes = iter(["a" * 56, "b" * 56, "a" * 56, "b" * 56])
    store(tmp_path, RL, lambda trial: rl_rows(trial, node=next(nodes)))
    report = write_report(tmp_path)
    assert report.missing == []
    assert "Partial" not in report.table
    assert report.table.splitlines()[-1] == "4 trials ran on 2 nodes."
    assert (tmp_path / TABLE_NAME).read_text() == report.table
    assert report.paths["table"] == str(tmp_path / TABLE_NAME)


def test_trials_stored_without_node_ids_get_no_nodes_line(tmp_path):
    store(tmp_path, RL, rl_rows)
    table = write_report(tmp_path).table
    assert "ran on" not in table
    assert table.splitlines()[-1].startswith("| 6 |")


def test_a_sweep_resumed_on_newer_code_counts_the_trials_that_recorded_a_node(tmp_path):
    first = []

    def rows(trial):
        first.append(trial)
        return rl_rows(trial, node="n1" if len(first) > 1 else None)

    store(tmp_path, RL, rows)
    assert write_report(tmp_path).table.splitlines()[-1] == (
        "3 trials ran on 1 node; 1 more recorded no node."
    )


def test_a_partial_rl_sweep_names_the_settings_sizes_and_seeds_it_lacks(tmp_path):
    def rows(trial):
        if trial["setting"] == "IMM" and trial["seeds"] == [2, 3]:
            return None  # never started
        if trial["setting"] == "IMM":
            return rl_rows(trial, sizes=[3], node="n2")  # interrupted after its first size
        return rl_rows(trial, node="n1")

    store(tmp_path, RL, rows)
    report = write_report(tmp_path)
    assert report.missing == [
        "**Partial sweep:** 2 of 4 trials have not finished; no results for:",
        "- IMM: epochs 3 (seeds 2, 3); epochs 6 (seeds 0–3)",
    ]
    lines = report.table.splitlines()
    assert lines[-5:] == ["", *report.missing, "", "3 trials ran on 2 nodes."]
    # The table shows what there is: IMM at 3 epochs over the seeds that reported it.
    assert [line.split("|")[3].strip() for line in lines if line.startswith("| 3 ")] == [
        "3.500 [3.100, 3.900]"
    ]


def test_report_prints_the_partial_sweeps_warning_on_the_console(tmp_path, capsys):
    store(tmp_path, RL, lambda trial: rl_rows(trial) if trial["setting"] == "IMM" else None)
    assert main(["report", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "- No IMM: epochs 3, 6 (seeds 0–3)" in out
    assert err.splitlines() == [
        "imm-ray: warning: partial sweep: 2 of 4 trials have not finished; no results for:",
        "  - No IMM: epochs 3, 6 (seeds 0–3)",
    ]


def test_a_partial_logistic_sweep_names_settings_and_sizes_without_seeds(tmp_path):
    # Each sampled-IMM setting is split by sizes into its own trials; the cheap settings
    # share one trial that reports every setting at every size on its own row. A trial's
    # Monte Carlo runs are all there or none: no seeds are named.
    experiment = LogisticExperiment(
        "tiny-logistic",
        (
            LogisticSetting("Baseline", Method("baseline")),
            LogisticSetting("Noising", Method("noising")),
            LogisticSetting("IMM", Method("imm")),
        ),
        sizes=(5, 10, 20),
        runs=3,
        imm_trials=2,
    )
    trials = experiment.trials()
    assert sorted(t["setting"] for t in trials) == ["Baseline + Noising", "IMM", "IMM"]

    def rows(trial):
        if trial["setting"] == "IMM" and trial["sizes"] == [20]:
            return None
        rows = []
        for setting in trial["settings"]:
            for size in trial["sizes"]:
                if setting["label"] == "Noising" and size == 20:
                    continue  # killed before its last row
                values = {str(run): 50.0 + run for run in range(3)}
                rows.append({"setting": setting["label"], "size": size, "values": values})
        return rows

    assert_partial(tmp_path, experiment, rows, "2 of 3", "- Noising: n 20", "- IMM: n 20")


def test_a_partial_lm_sweep_counts_a_trial_by_its_epochs_whatever_curves_it_reports(tmp_path):
    # An LM trial is one setting and one seed; it reports several curves after its last
    # epoch (here valid and test) and, with only end-of-run metrics, bare rows before.
    experiment = LMExperiment(
        "tiny-lm",
        (LMSetting("None", "none"), LMSetting("IMM", "imm")),
        metrics=("test_ppl",),
        preset="tiny",
        overrides={"epochs": 3},
        seeds=(0, 1),
    )

    def rows(trial):
        seed, curve = str(trial["seed"]), trial["curves"]["test_ppl"]
        done = {("IMM", 1): 1, ("None", 1): 2}.get((trial["setting"], trial["seed"]), 3)
        out = [{"size": epoch, "valid_ppl": 90.0} for epoch in range(1, min(done, 2) + 1)]
        if done == 3:
            out.append({"size": 3, "setting": curve, "values": {seed: 80.0 + trial["seed"]}})
        return out

    missing = ("- None: epochs 3 (seed 1)", "- IMM: epochs 2, 3 (seed 1)")
    assert_partial(tmp_path, experiment, rows, "2 of 4", *missing)


def test_a_result_line_still_being_written_is_left_out(tmp_path):
    store(tmp_path, RL, rl_rows)
    result = next(tmp_path.glob("*/result.json"))
    result.write_text(result.read_text() + '{"size": 9, "val')
    assert write_report(tmp_path).missing == []


def test_a_trial_whose_parameters_are_still_being_written_is_left_out(tmp_path):
    # Tune writes a new trial's params.json in place, as the trial starts: a report of a
    # running sweep (or a test watching one) may find it empty or cut.
    store(tmp_path, RL, rl_rows)
    first, second, *others = sorted(tmp_path.glob("*/params.json"))
    first.write_text("")
    second.write_text(second.read_text()[:10])
    assert sorted(t.folder for t in read_trials(tmp_path)) == sorted(p.parent.name for p in others)
