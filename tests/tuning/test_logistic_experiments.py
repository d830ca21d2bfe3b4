"""The logistic figures as data, their trials, and a logistic sweep run as users run it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from trial_pids import assert_every_trial_wrote_its_pid

from imm_ray.supervised.logistic.train import Method
from tuning.logistic import EXPERIMENTS, LogisticExperiment, LogisticSetting


def test_figure1_is_four_methods_over_n_2_to_50_with_300_runs():
    figure1 = EXPERIMENTS["figure1"]
    assert [s.method.name for s in figure1.settings] == [
        "imm",
        "noising",
        "interpolation",
        "baseline",
    ]
    assert all(s.method.ratio is None for s in figure1.settings)  # the r(n) schedule
    assert figure1.sizes == tuple(range(2, 51)) and figure1.runs == 300
    assert all(s.method.lr == 1.0 and s.method.alpha == 1.0 for s in figure1.settings)


def test_the_other_figures_follow_the_paper():
    figure4, figure6 = EXPERIMENTS["figure4"], EXPERIMENTS["figure6"]
    assert figure4.sizes == (10,) and figure4.runs == 30 and figure4.metric == "imm_risk"
    assert [s.method.ratio for s in figure4.settings] == [r / 10 for r in range(10)]
    assert figure6.sizes == (2, 10, 20) and figure6.runs == 30
    assert {(s.method.lr, s.method.ratio) for s in figure6.settings} == {
        (lr, r / 10) for lr in (0.1, 1.0) for r in range(10)
    }
    figure8 = EXPERIMENTS["figure8"].settings
    assert [s.method.target_mix for s in figure8] == [0.0, 0.2, 0.5, 0.0]
    # Weaker targets get a schedule that lets go of IMM sooner as n grows.
    ratios = [[s.method.ratio_at(n) for n in (2, 10, 30)] for s in figure8[:3]]
    assert ratios[0][2] > ratios[1][2] > ratios[2][2] > 0
    assert [s.method.name for s in EXPERIMENTS["figure10"].settings] == [
        "imm",
        "serialized",
        "noising",
        "baseline",
    ]
    table4 = EXPERIMENTS["table4"]
    assert table4.sizes == (5, 10, 15, 20, 30, 40, 50)
    # λ = 1.5 is r = λ / (1 + λ) = 0.6.
    assert [s.method.ratio for s in table4.settings[1:]] == [0.6, 0.6]
    assert table4.gap == ("IMM", "Noising")


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_trials_cover_every_setting_at_every_size_once(name):
    experiment = EXPERIMENTS[name]
    covered = [
        (setting["label"], n)
        for trial in experiment.trials()
        for setting in trial["settings"]
        for n in trial["sizes"]
    ]
    expected = [(s.label, n) for s in experiment.settings for n in experiment.sizes]
    assert sorted(covered) == sorted(expected)
    experiment.validate()


def test_sampled_imm_is_split_by_cost_and_the_cheap_methods_share_one_trial():
    trials = EXPERIMENTS["figure1"].trials()
    imm = [t for t in trials if t["settings"][0]["method"]["name"] == "imm"]
    cheap = [t for t in trials if t not in imm]
    assert len(imm) == 3 and len(cheap) == 1 and len(cheap[0]["settings"]) == 3
    # Contiguous size groups, the larger sizes in smaller groups (an n × n table each).
    groups = sorted(t["sizes"] for t in imm)
    assert [n for group in groups for n in group] == list(range(2, 51))
    assert len(groups[0]) > len(groups[1]) > len(groups[2])


def test_experiments_round_trip_through_their_saved_form():
    for experiment in EXPERIMENTS.values():
        assert LogisticExperiment.from_dict(experiment.to_dict()) == experiment


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"sizes": (1, 5)}, "sizes must be a non-empty list of integers >= 2"),
        ({"runs": 0}, "runs must be an integer >= 1"),
        ({"x_axis": "ratio"}, "x_axis 'ratio' needs a fixed ratio in every setting"),
        ({"x_axis": "lr"}, "x_axis must be one of size, ratio"),
        ({"gap": ("IMM", "KD")}, "gap must name two setting labels"),
        ({"metric": "f1"}, "metric must be one of accuracy, imm_risk"),
        ({"cpus_per_trial": 0}, "cpus_per_trial must be a number > 0"),
    ],
)
def test_bad_experiments_name_the_field(changes, message):
    base = {
        "name": "x",
        "settings": (LogisticSetting("IMM", Method()), LogisticSetting("No", Method("baseline"))),
    }
    with pytest.raises(ValueError, match=message):
        LogisticExperiment(**{**base, **changes})


def test_imm_ray_sweep_table4_writes_the_table_with_its_gap_and_redraws_it(tiny_sweeps, tmp_path):
    run = tiny_sweeps("logistic")  # table4, 12 seeds
    result, storage = run.result, run.storage
    assert result.returncode == 0, result.stderr[-3000:]
    folder = storage / "table4"
    rows = (folder / "summary.csv").read_text().splitlines()
    assert rows[0] == "setting,n,mean,p10,p90,seeds"
    assert len(rows) == 1 + 3 * 7 and all(row.endswith(",12") for row in rows[1:])
    table = (folder / "summary.md").read_text()
    assert "| Dataset size n | Baseline | Noising | IMM | IMM − Noising | runs |" in table
    body = [line for line in table.splitlines() if line.startswith("| ") and "[" in line]
    assert [line.split("|")[1].strip() for line in body] == [
        "5",
        "10",
        "15",
        "20",
        "30",
        "40",
        "50",
    ]
    for line in body:  # the gap column is the difference of the two means
        cells = [c.strip() for c in line.split("|")[2:-1]]
        noising, imm = (float(c.split()[0]) for c in cells[1:3])
        assert float(cells[3]) == pytest.approx(imm - noising, abs=2e-3)
    # Redrawn from a copy: the session's sweep is other tests' too (tiny_sweeps.py).
    folder = Path(shutil.copytree(folder, tmp_path / "table4"))
    (folder / "summary.md").unlink()
    redrawn = subprocess.run(
        [sys.executable, "-m", "imm_ray.cli", "report", str(folder)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert redrawn.returncode == 0, redrawn.stderr
    assert (folder / "summary.md").read_text() == table
    assert (folder / "figure.png").read_bytes()[:4] == b"\x89PNG"
    assert_every_trial_wrote_its_pid(folder)
