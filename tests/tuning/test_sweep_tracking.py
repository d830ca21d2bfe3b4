"""A sweep in MLflow (``imm-ray sweep NAME --mlflow``), read back with ``MlflowClient``: the
tiny RL sweep (:mod:`tiny_sweeps`, tracked in the default store ``STORAGE/mlflow.db``) has
a parent run named after it, with the report's files as artifacts, and a run per trial
under it whose parameters are its setting and seeds and whose metric is the trial's value
at each epoch count, as the stored results hold it; the tiny sweep of every kind logs every
stored value; ``--resume`` refuses a store other than the sweep's own, before Ray
starts."""

from __future__ import annotations

import math

import pytest
from mlflow.tracking import MlflowClient
from sweep_drivers import imm_ray

from imm_ray import results
from tuning.kinds import KIND_MODULES
from tuning.mlflow_trials import curve_metric
from tuning.report import read_trials


@pytest.fixture(scope="module")
def tracked(tiny_sweeps):
    run = tiny_sweeps("rl")  # SWEEP, 2 seeds one a trial, epochs 3 and 6
    assert run.result.returncode == 0, run.result.stderr[-3000:]
    uri = f"sqlite:///{run.storage.resolve() / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("tiny")
    runs = client.search_runs([experiment.experiment_id])
    return run, uri, client, runs


def test_the_sweep_is_a_parent_run_holding_the_report_as_artifacts(tracked, tmp_path):
    run, uri, client, runs = tracked
    assert f"mlflow: {uri}" in run.result.stdout
    (parent,) = [r for r in runs if r.info.run_name == "tiny"]
    assert parent.info.status == "FINISHED"
    assert parent.data.params["seeds"] == "2" and parent.data.params["kind"] == "rl"
    artifacts = {item.path for item in client.list_artifacts(parent.info.run_id)}
    assert artifacts == {"summary.csv", "summary.md", "figure.png", "experiment.json"}
    folder = run.storage / "tiny"
    local = client.download_artifacts(parent.info.run_id, "summary.csv", str(tmp_path))
    assert open(local).read() == (folder / "summary.csv").read_text()
    # Beside the results: the store and its artifacts, never ./mlruns.
    assert parent.info.artifact_uri.startswith((run.storage / "mlartifacts").resolve().as_uri())


def test_each_trial_is_a_run_with_its_setting_seeds_and_values_per_epoch_count(tracked):
    run, _, client, runs = tracked
    (parent,) = [r for r in runs if r.info.run_name == "tiny"]
    trials = [r for r in runs if r is not parent]
    assert len(trials) == 4
    frame = results.load(run.storage / "tiny")
    for trial in trials:
        params = trial.data.params
        assert trial.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert trial.info.status == "FINISHED" and trial.data.tags["device"] == "cpu"
        assert trial.info.run_name == f"{params['setting']} {params['tag']}"
        assert params["setting"] in ("No IMM", "IMM") and params["seeds"] in ("0", "1")
        assert params["env"] == "imm_ray/ToroidalGrid-v0" and params["target/kind"] == "argmax"
        history = client.get_metric_history(trial.info.run_id, "value")
        mine = frame[
            (frame["setting"] == params["setting"]) & (frame["seed"] == int(params["seeds"]))
        ]
        assert [m.step for m in history] == list(mine["epochs"]) == [3, 6]
        assert [m.value for m in history] == pytest.approx(list(mine["value"]))
    assert {(t.data.params["setting"], t.data.params["seeds"]) for t in trials} == {
        (setting, seed) for setting in ("No IMM", "IMM") for seed in ("0", "1")
    }


def test_resume_refuses_another_store_before_ray_starts(tracked, tmp_path):
    run, uri, client, runs = tracked
    sweep = run.storage.parent / "tiny.yaml"
    other = f"sqlite:///{tmp_path / 'other.db'}"
    result = imm_ray(
        "sweep", str(sweep), "--storage", str(run.storage), "--resume", "--mlflow", other
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip() == (
        f"imm-ray: error: --mlflow: the sweep in {run.storage / 'tiny'} logs to MLflow at "
        f"{uri}, and --resume continues it as it was started; drop --mlflow (or give that "
        "URI) to resume it"
    )
    assert not (tmp_path / "other.db").exists()
    # Nothing in the store changed.
    experiment = client.get_experiment_by_name("tiny")
    assert len(client.search_runs([experiment.experiment_id])) == len(runs)


def test_a_rows_metrics_are_its_numbers_and_its_mean_value_per_curve_at_its_size():
    from tuning.mlflow_trials import curve_metric, row_metrics

    assert curve_metric("IMM", None) == curve_metric("IMM", "IMM") == "value"
    assert curve_metric("IMM with KN bigram", "IMM with KN bigram, valid") == "value/valid"
    assert (
        curve_metric("IMM with KN bigram", "Kneser–Ney bigram, bigram test")
        == "value/Kneser-Ney bigram - bigram test"
    )
    assert curve_metric("A + B", "A/B (x)") == "value/A_B _x_"
    trial = {"setting": "IMM"}
    row = {
        "size": 6,
        "values": {"0": 1.0, "1": float("nan"), "2": 3.0},  # a failed seed: left out
        "valid_ppl": 12.5,
        "device": "cpu",
        "gpu_unusable": False,
        "training_iteration": 4,
        "time_total_s": 2.0,
    }
    step, metrics = row_metrics(trial, row)
    assert step == 6
    assert {k: v for k, v in metrics.items() if isinstance(v, float)} == {
        "valid_ppl": 12.5,
        "value": 2.0,
    }
    _, failed = row_metrics(trial, {"size": 3, "values": {"0": float("nan")}})
    assert math.isnan(failed["value"])


def _seeds(params: dict[str, str], every: set[int]) -> set[int]:
    """A trial run's seeds: ``seed``, or ``seeds`` as ``--seeds`` writes them (``0-2,5``);
    ``every`` for a logistic trial, whose ``runs`` Monte Carlo runs are the stored values'
    seeds (its ``seed`` seeds them all)."""
    if "runs" in params:
        return every
    text = params.get("seed", params.get("seeds"))
    seeds = set()
    for part in text.split(","):
        low, _, high = part.partition("-")
        seeds.update(range(int(low), int(high or low) + 1))
    return seeds


@pytest.mark.parametrize("kind", list(KIND_MODULES))
def test_every_kinds_tracked_sweep_logs_each_stored_value_under_its_trials_run(tiny_sweeps, kind):
    """Each trial's run logs, at each size its rows reached, the mean of the stored
    per-seed values of each of its curves (``value``, ``value/<curve>``), and every stored
    value is behind one of them; the parent holds the report's files. The rows compared
    are the sweep's own: the session's sweep is shared, and a test that edits rows works
    on a copy (a BERT end-to-end test once rewrote seed 1's dev value in place, and this
    check then saw its run's true value as wrong)."""
    run = tiny_sweeps(kind)
    assert run.result.returncode == 0, run.result.stderr[-3000:]
    changed = run.changed_results()
    assert not changed, f"rewritten since the sweep ran, by an earlier test: {changed}"
    (folder,) = [p for p in run.storage.iterdir() if p.is_dir() and p.name != "mlartifacts"]
    client = MlflowClient(tracking_uri=f"sqlite:///{run.storage.resolve() / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(folder.name)
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.info.run_name == folder.name]
    assert parent.info.status == "FINISHED"
    report = {"summary.csv", "summary.md", "figure.png", "experiment.json"}
    artifacts = {item.path for item in client.list_artifacts(parent.info.run_id)}
    written = {name for name in report if (folder / name).is_file()}
    assert artifacts == written and {"summary.csv", "summary.md", "experiment.json"} <= written
    trials = [r for r in runs if r is not parent]
    assert len(trials) == len(read_trials(folder))
    frame = results.load(folder)
    size = frame.columns[1]
    every = set(frame["seed"])
    covered = set()
    for trial in trials:
        params = trial.data.params
        assert trial.info.status == "FINISHED" and "setting" in params
        assert trial.data.tags["mlflow.parentRunId"] == parent.info.run_id
        seeds = _seeds(params, every)
        curves = frame["setting"].map(lambda curve, s=params["setting"]: curve_metric(s, curve))
        keys = [key for key in trial.data.metrics if key.split("/")[0] == "value"]
        assert keys, trial.data.metrics
        for key in keys:
            for point in client.get_metric_history(trial.info.run_id, key):
                rows = frame[
                    (curves == key) & (frame[size] == point.step) & frame["seed"].isin(seeds)
                ]
                assert len(rows), (params["setting"], key, point.step)
                assert point.value == pytest.approx(rows["value"].mean(), nan_ok=True)
                covered.update(rows.index)
    assert covered == set(frame.index), frame.drop(index=list(covered))
