"""The BERT experiment (Table 2): its trials, and a tiny table2 through ``imm-ray sweep`` on a
real local Ray."""

from __future__ import annotations

import csv
import json
import math
import shutil

import pytest
from sweep_checks import assert_plans_two_seeds_imm_first, summary_rows
from trial_pids import assert_every_trial_wrote_its_pid

from imm_ray.console import quiet_transformers
from tuning.bert import EXPERIMENTS, BertExperiment, BertSetting
from tuning.kinds import named_experiment
from tuning.report import write_report

quiet_transformers()


def test_table2_plans_one_trial_per_setting_and_seed_imm_first(tmp_path):
    experiment = EXPERIMENTS["table2"].with_overrides(
        seeds=2, data=str(tmp_path), model="tiny", corpus=str(tmp_path), epochs=2, positions=3
    )
    assert named_experiment("table2") is EXPERIMENTS["table2"]
    assert_plans_two_seeds_imm_first(experiment, 6, positions=3)
    assert experiment.curves()[:3] == ["BERT, dev", "+MLM, dev", "+MLM+IMM, dev"]
    assert experiment.y_label == "MCC × 100"


def test_bad_fields_fail_at_construction_and_validation_needs_data_and_model():
    with pytest.raises(ValueError, match="k must be an integer >= 1, got 0"):
        BertExperiment("bad", (BertSetting("a", "imm", {"k": 0}),))
    with pytest.raises(ValueError, match="lam must be a finite number >= 0, got -1"):
        EXPERIMENTS["table2"].with_overrides(lam=-1)
    with pytest.raises(ValueError, match="table2 needs the task's TSV folder: pass --data DIR"):
        EXPERIMENTS["table2"].validate()


def test_tiny_table2_sweep_runs_end_to_end_through_the_cli(tiny_sweeps, tmp_path):
    run = tiny_sweeps("bert")  # table2 on bert_data, 2 seeds, table2's learning rate
    result, storage = run.result, run.storage
    assert result.returncode == 0, result.stderr[-3000:]
    folder = storage / "table2"
    experiment = EXPERIMENTS["table2"]
    rows = summary_rows(folder, experiment)
    assert {epochs for (setting, epochs) in rows if setting.endswith("dev")} == {"1", "2"}
    assert all(r["seeds"] == "2" for r in rows.values())
    table = (folder / "summary.md").read_text()
    assert "MCC × 100, mean ± std over runs" in table and " ± " in table.splitlines()[4]
    assert (folder / "figure.png").stat().st_size > 0
    trial_dirs = [d for d in folder.iterdir() if d.is_dir() and (d / "params.json").is_file()]
    assert len(trial_dirs) == 6
    imm_dev: dict[str, float] = {}  # seed → its last reported dev MCC at epoch 2
    for trial_dir in trial_dirs:
        assert list(trial_dir.glob("checkpoint_*/model.safetensors"))
        reports = [
            json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()
        ]
        for report in reports:
            if report["setting"] == "+MLM+IMM, dev" and report["size"] == 2:
                imm_dev.update(report["values"])
        last = reports[-1]
        assert -100 <= next(iter(last["values"].values())) <= 100
        assert last["train_seconds"] > 0
        if "IMM" in last["setting"]:
            assert last["imm_risk"] > 0 and last["mlm_loss"] > 0
    assert_every_trial_wrote_its_pid(folder)
    # The summary's mean ± std is over the two seeds' own reports: for two values a and b
    # the sample standard deviation (ddof 1) is |a − b| / √2. The CSV rounds to 4 decimals.
    assert sorted(imm_dev) == ["0", "1"]
    a, b = imm_dev.values()
    row = rows[("+MLM+IMM, dev", "2")]
    assert float(row["mean"]) == pytest.approx((a + b) / 2, abs=1e-4)
    assert float(row["std"]) == pytest.approx(abs(a - b) / math.sqrt(2), abs=1e-4)

    # A tiny BERT on 24 sentences may predict one class whatever its seed (MCC 0 for both),
    # and then every spread formula gives 0. So give seed 1 another dev MCC at epoch 2 in
    # its own result.json and rewrite the report from the folder: seed 0's value a and 30
    # make mean (a + 30) / 2 and sample std |a − 30| / √2 (21.2132 for a = 0; ddof 0: 15).
    # On a copy (checkpoints left out): the session's sweep is other tests' too, and the
    # MLflow check of test_sweep_tracking.py compares its runs with the rows as stored.
    folder = tmp_path / "table2"
    shutil.copytree(storage / "table2", folder, ignore=shutil.ignore_patterns("checkpoint_*"))
    trial_dirs = [d for d in folder.iterdir() if d.is_dir() and (d / "params.json").is_file()]
    trials = {d: json.loads((d / "params.json").read_text())["trial"] for d in trial_dirs}
    (seed1,) = [d for d, t in trials.items() if t["setting"] == "+MLM+IMM" and t["seed"] == 1]
    edited = []
    for report in map(json.loads, (seed1 / "result.json").read_text().splitlines()):
        if report["setting"] == "+MLM+IMM, dev" and report["size"] == 2:
            report["values"] = {"1": 30.0}
        edited.append(json.dumps(report))
    (seed1 / "result.json").write_text("\n".join(edited) + "\n")
    write_report(folder)
    with open(folder / "summary.csv") as handle:
        rows = {(r["setting"], r["epochs"]): r for r in csv.DictReader(handle)}
    a = imm_dev["0"]
    mean, std = (a + 30.0) / 2, abs(a - 30.0) / math.sqrt(2)
    assert float(rows[("+MLM+IMM, dev", "2")]["mean"]) == pytest.approx(mean, abs=1e-4)
    assert float(rows[("+MLM+IMM, dev", "2")]["std"]) == pytest.approx(std, abs=1e-4)
    assert f"{mean:.3f} ± {std:.3f}" in (folder / "summary.md").read_text()
