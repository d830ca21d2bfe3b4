"""What ``--resume`` mends before Tune restores a killed sweep (:mod:`tuning.resume`), on
hand-made experiment states: finished trials whose results never reached the storage run
again, and the rows of trials that run again are kept for the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuning.report import read_trials, save_experiment, write_report
from tuning.resume import mend_before_resume
from tuning.rl import Experiment, Setting
from tuning.storage import resolve

RL = Experiment(
    name="tiny", settings=(Setting("No IMM", imm=False),), epochs=(3, 6), seeds=3, seeds_per_trial=1
)


def row(trial, size):
    return json.dumps({"size": size, "values": {str(s): float(size) for s in trial["seeds"]}})


def killed_sweep(folder: Path, statuses, stored_sizes):
    """A stored sweep as a killed driver leaves it: a state recording ``statuses`` and
    trial folders whose result.json holds ``stored_sizes`` (``None``: no file)."""
    folder.mkdir()
    save_experiment(folder, RL)
    trial_data = []
    for i, (trial, status, sizes) in enumerate(
        zip(RL.trials(), statuses, stored_sizes, strict=True)
    ):
        logdir = f"t{i}_{trial['tag']}"
        (folder / logdir).mkdir()
        (folder / logdir / "params.json").write_text(json.dumps({"trial": trial}))
        if sizes is not None:
            text = "".join(row(trial, size) + "\n" for size in sizes)
            (folder / logdir / "result.json").write_text(text)
        state = {"status": status, "config": {"trial": trial}, "relative_logdir": logdir}
        trial_data.append([json.dumps(state), json.dumps({"num_failures": 0})])
    (folder / "experiment_state-2026-01-01_00-00-00.json").write_text(
        json.dumps({"trial_data": trial_data, "runner_data": {"x": 1}})
    )


def stored_statuses(folder: Path) -> list[str]:
    state = json.loads((folder / "experiment_state-2026-01-01_00-00-00.json").read_text())
    assert state["runner_data"] == {"x": 1}
    return [json.loads(trial)["status"] for trial, _ in state["trial_data"]]


def test_finished_trials_whose_results_were_not_stored_run_again(tmp_path):
    folder = tmp_path / "tiny"
    killed_sweep(folder, ["TERMINATED"] * 3, [[3, 6], [3], None])
    assert mend_before_resume(resolve(folder)) == ["t1_lam0_seeds1-1", "t2_lam0_seeds2-2"]
    assert stored_statuses(folder) == ["TERMINATED", "PENDING", "PENDING"]
    # The complete trial's folder is untouched; the partial one's rows are kept.
    assert sorted(p.name for p in (folder / "t0_lam0_seeds0-0").iterdir()) == [
        "params.json",
        "result.json",
    ]
    kept = folder / "t1_lam0_seeds1-1" / "result-before-resume-001.json"
    assert kept.read_text() == (folder / "t1_lam0_seeds1-1" / "result.json").read_text()
    assert mend_before_resume(resolve(folder)) == []  # once pending, left to Tune


def test_rows_stored_before_a_resume_are_reported_with_the_rows_after_it(tmp_path):
    # A trial resumed from its checkpoint after size 3 reports only size 6 into a fresh
    # result.json, which replaces the stored one; the report still has both.
    folder = tmp_path / "tiny"
    killed_sweep(folder, ["TERMINATED", "TERMINATED", "RUNNING"], [[3, 6], [3, 6], [3]])
    assert mend_before_resume(resolve(folder)) == []
    assert stored_statuses(folder) == ["TERMINATED", "TERMINATED", "RUNNING"]
    resumed = folder / "t2_lam0_seeds2-2"
    assert (resumed / "result-before-resume-001.json").is_file()
    trial = RL.trials()[2]
    (resumed / "result.json").write_text(row(trial, 6) + "\n")
    assert [r["size"] for t in read_trials(folder) for r in t.rows if t.trial == trial] == [3, 6]
    report = write_report(folder)
    assert report.missing == []
    assert report.table.splitlines()[-1].endswith("| 3 |")


def test_resume_refuses_options_that_would_change_the_stored_sweep(tmp_path):
    import dataclasses

    import pytest

    from tuning.sweep import SweepError, check_same_sweep

    folder = tmp_path / "tiny"
    folder.mkdir()
    save_experiment(folder, RL)
    where = resolve(folder)
    check_same_sweep(where, RL)  # the same sweep resumes
    with pytest.raises(SweepError) as refused:
        check_same_sweep(where, dataclasses.replace(RL, seeds=5, cpus_per_trial=2))
    message = str(refused.value)
    assert message.startswith(f"--resume continues the sweep in {folder} as it was started")
    assert "seeds: 3 there, 5 now" in message and "cpus_per_trial: 1.0 there, 2 now" in message
    # A count of seeds is the list of seeds it names, as --seeds gives it.
    check_same_sweep(where, dataclasses.replace(RL, seeds=[0, 1, 2]))
    assert "another --storage" in message
    # A field the stored sweep does not have (an older version's) is not compared, and a
    # sweep stopped before its experiment.json was written resumes as Tune stored it.
    stored = json.loads((folder / "experiment.json").read_text())
    del stored["seeds"]
    (folder / "experiment.json").write_text(json.dumps(stored))
    check_same_sweep(where, dataclasses.replace(RL, seeds=5))
    (folder / "experiment.json").unlink()
    check_same_sweep(where, dataclasses.replace(RL, seeds=5))


def test_sweep_resume_with_other_seeds_exits_2_before_ray_starts_and_keeps_the_sweep(tmp_path):
    import subprocess
    import sys

    from tuning.resume import STATE_PREFIX
    from tuning.rl import EXPERIMENTS

    folder = tmp_path / "figure2"
    folder.mkdir()
    save_experiment(folder, EXPERIMENTS["figure2"].with_overrides(seeds=10))
    (folder / f"{STATE_PREFIX}2026-12-06.json").write_text("{}")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    result = subprocess.run(
        [sys.executable, "-m", "imm_ray.cli", "sweep", "figure2", "--seeds", "5", "--resume"]
        + ["--storage", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("imm-ray: error: --resume continues the sweep in ")
    assert "seeds: 10 there, [0, 1, 2, 3, 4] now" in result.stderr
    assert "Traceback" not in result.stderr
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_a_state_cut_short_by_a_kill_is_refused_naming_it(tmp_path):
    from tuning.resume import check_state

    folder = tmp_path / "tiny"
    killed_sweep(folder, ["TERMINATED", "PENDING", "PENDING"], [[3, 6], None, None])
    check_state(resolve(folder))  # a whole state: nothing to say
    newer = folder / "experiment_state-2026-01-02_00-00-00.json"
    for cut in ("", '{"trial_data": [["{'):
        newer.write_text(cut)
        with pytest.raises(ValueError, match=f"--resume: Tune's state {newer} is empty or cut"):
            check_state(resolve(folder))


def test_a_search_trials_last_row_comes_back_from_the_state(tmp_path):
    """A finished search trial whose result.json lost its last row (the driver was killed
    before Tune copied it) gets the row back from the experiment state; other trials stay
    as they were."""
    from tuning.resume import mend_search_before_resume

    folder = tmp_path / "search"
    folder.mkdir()
    rows = [
        {"epochs": e, "reward": float(e), "training_iteration": i + 1}
        for i, e in enumerate((5, 10))
    ]
    trial_data = []
    for name, status, stored in (
        ("lost", "TERMINATED", rows[:1]),
        ("whole", "TERMINATED", rows),
        ("running", "RUNNING", rows[:1]),
    ):
        (folder / name).mkdir()
        text = "".join(json.dumps(row) + "\n" for row in stored)
        (folder / name / "result.json").write_text(text)
        state = {"status": status, "config": {}, "relative_logdir": name}
        trial_data.append([json.dumps(state), json.dumps({"last_result": rows[-1]})])
    (folder / "experiment_state-2026-01-01_00-00-00.json").write_text(
        json.dumps({"trial_data": trial_data, "runner_data": {}})
    )
    assert mend_search_before_resume(resolve(folder)) == ["lost"]
    for name, expected in (("lost", rows), ("whole", rows), ("running", rows[:1])):
        lines = (folder / name / "result.json").read_text().splitlines()
        assert [json.loads(line) for line in lines] == expected, name
    assert mend_search_before_resume(resolve(folder)) == []  # once is enough
