"""``imm-ray search`` on a real Ray and Tune: what a search finds, that it finds it again
(the same seed, a killed and resumed driver), that a PBT member continues exactly from the
checkpoint it copies, and the mechanisms underneath (the batch-ordered ASHA's cutoffs, the
ordered searcher's batches) on hand-made inputs."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from sweep_drivers import imm_ray

from imm_ray.imm.weighting import ratio_to_lambda
from tuning.rl import Experiment, Setting, run_trial
from tuning.search import Search, SearchSpace, lambda_at, make_search_algorithm, run_search

SEEDS = 3
EXPERIMENT = Experiment("tiny", (Setting("IMM", lam=0.25),), epochs=(5, 10, 15), seeds=SEEDS)
#: Optuna (TPE after 2 random draws) with ASHA over 8 trials in batches of 2.
SPACE = SearchSpace(param="r", low=0.0, high=0.9, scheduler="asha", num_samples=8, max_concurrent=2)
SEARCH = Search("tiny-search", EXPERIMENT, SPACE)


def search_file(folder: Path, **space) -> Path:
    """The tiny search as a sweep file with a ``search:`` section."""
    path = folder / "search.yaml"
    fields = {
        "param": "r",
        "low": 0.0,
        "high": 0.9,
        "scheduler": "asha",
        "num_samples": 8,
        "max_concurrent": 2,
        **space,
    }
    section = ", ".join(f"{k}: {v}" for k, v in fields.items())
    path.write_text(
        "name: tiny-search\nepochs: [5, 10, 15]\nseeds: 3\nsettings:\n  - label: IMM\n"
        f"search: {{{section}}}\n"
    )
    return path


def trials_table(folder: Path) -> list[list[str]]:
    """``trials.csv`` without its folder column (Tune's trial ids are random)."""
    rows = list(csv.reader((folder / "trials.csv").read_text().splitlines()))
    assert rows[0][-1] == "folder"
    return [row[:-1] for row in rows]


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> Path:
    """The tiny search, run once in this process: its folder."""
    storage = tmp_path_factory.mktemp("search")
    run_search(SEARCH, storage)
    return storage / SEARCH.name


def test_a_search_reports_every_trial_and_the_best(searched):
    table = trials_table(searched)
    assert table[0] == ["trial", "lambda", "r", "epochs", "reward", "reward_se", "best"]
    rows = table[1:]
    assert [int(row[0]) for row in rows] == list(range(8))
    for row in rows:
        assert float(row[1]) == pytest.approx(ratio_to_lambda(float(row[2])), rel=1e-5)
        assert 0 <= float(row[2]) <= 0.9 and int(row[3]) in (5, 10, 15)
    # ASHA (rungs at 5 epochs; η = 3) stopped some trials of the later batches, none of
    # the first batch's (nothing earlier to compare with).
    assert all(int(row[3]) == 15 for row in rows[:2])
    assert any(int(row[3]) < 15 for row in rows[2:])
    best = json.loads((searched / "best.json").read_text())
    finished = [row for row in rows if int(row[3]) == 15]
    top = max(finished, key=lambda row: float(row[4]))
    assert [row[-1] for row in rows].count("1") == 1 and top[-1] == "1"
    assert best["trial"] == int(top[0]) and best["epochs"] == 15
    assert best["reward"] == pytest.approx(float(top[4]), rel=1e-5)
    assert best["r"] == pytest.approx(float(top[2]), rel=1e-5)
    # imm-ray report redraws a search's files from its trials, as it does a sweep's.
    (searched / "trials.csv").unlink()
    again = imm_ray("report", str(searched), timeout=120)
    assert again.returncode == 0, again.stderr
    assert trials_table(searched) == table and "Best: λ = " in again.stdout


def test_a_search_trial_at_a_lambda_is_the_sweep_trial_at_that_lambda(searched):
    """The two RL paths that train one setting at one λ agree seed by seed: the search's
    class trainable (built at λ = 1, then set to its own, on a reused actor) and the sweep's
    trial."""
    from tuning.report import read_trials

    for trial in sorted(read_trials(searched), key=lambda t: t.params["index"])[:3]:
        lam = ratio_to_lambda(trial.params["r"])
        experiment = Experiment("x", (Setting("IMM", lam=lam),), epochs=(5, 10, 15), seeds=SEEDS)
        direct = run_trial(experiment.search_trial(), experiment.load_inputs())
        for row in trial.rows:
            expected = {str(seed): value for seed, value in direct[row["epochs"]].items()}
            assert row["values"] == pytest.approx(expected, rel=1e-6)
            assert row["reward"] == pytest.approx(np.mean(list(expected.values())), rel=1e-6)


def test_the_seed_is_the_samplers(searched):
    """Seed 0 draws the run's first values again, seed 1 others. (That a rerun gives the
    same trials, in another process, the killed-and-resumed search below shows.)"""
    ran = [float(row[2]) for row in trials_table(searched)[1:3]]
    for seed, same in ((0, True), (1, False)):
        algorithm = make_search_algorithm(SEARCH.with_space(seed=seed))
        drawn = [algorithm.suggest(f"t{i}")["r"] for i in range(2)]
        assert (drawn == pytest.approx(ran, rel=1e-5)) is same


def recorded_terminated(folder: Path) -> int:
    """Trials Tune's saved experiment state in ``folder`` records as terminated."""
    count = 0
    for entry in folder.glob("experiment_state*.json") if folder.exists() else []:
        try:
            state = json.loads(entry.read_text())
        except (OSError, json.JSONDecodeError):  # being replaced right now
            continue
        statuses = [json.loads(trial)["status"] for trial, _ in state["trial_data"]]
        count = max(count, statuses.count("TERMINATED"))
    return count


def recorded_time(folder: Path) -> int:
    """How far the furthest member has trained, by Tune's saved experiment state."""
    furthest = 0
    for entry in folder.glob("experiment_state*.json") if folder.exists() else []:
        try:
            state = json.loads(entry.read_text())
        except (OSError, json.JSONDecodeError):  # being replaced right now
            continue
        for _, meta in state["trial_data"]:
            last = json.loads(meta).get("last_result") or {}
            furthest = max(furthest, last.get("epochs", 0))
    return furthest


def kill_mid_search(path: Path, storage: Path, ready, what: str) -> None:
    """Runs ``imm-ray search PATH`` in a process group of its own until ``ready()``, then
    SIGKILLs the group: the driver and the Ray it started (``what``: what did not happen in
    time, should it end first or take over 240 s)."""
    driver = subprocess.Popen(
        [sys.executable, "-m", "imm_ray.cli", "search", str(path), "--storage", str(storage)],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    while not ready() and driver.poll() is None:
        assert time.monotonic() < deadline, what
        time.sleep(0.05)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()


def test_a_killed_search_resumes_to_the_same_result(searched, tmp_path):
    path = search_file(tmp_path)
    storage = tmp_path / "killed"
    folder = storage / "tiny-search"
    kill_mid_search(
        path, storage, lambda: recorded_terminated(folder) >= 2, "no trial finished in time"
    )
    assert 2 <= recorded_terminated(folder) < 8, "the kill must land mid-search"
    resumed = imm_ray("search", str(path), "--storage", str(storage), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert trials_table(folder) == trials_table(searched)


@pytest.mark.parametrize("older", ["search_gen_state-", "experiment_state-"])
def test_a_search_resumes_whichever_of_its_state_files_reached_the_storage_last(
    searched, tmp_path, older
):
    """Tune copies the experiment state and the search's state to the storage one file at a
    time: a driver killed between the two leaves one older than the other. Here one is put
    back as it was stored after the first batch, the other left as the kill found it (two
    batches later); the resumed search still ends as the uninterrupted one did."""
    path = search_file(tmp_path)
    storage = tmp_path / "killed"
    folder = storage / "tiny-search"
    kept: dict[Path, bytes] = {}

    def ready() -> bool:
        if not kept and recorded_terminated(folder) >= 2:
            for entry in folder.glob(f"{older}*.json"):
                kept[entry] = entry.read_bytes()
        return bool(kept) and recorded_terminated(folder) >= 4

    kill_mid_search(path, storage, ready, "no second batch finished in time")
    assert 4 <= recorded_terminated(folder) < 8, "the kill must land mid-search"
    assert kept, f"no {older}*.json was stored"
    for entry, content in kept.items():
        entry.write_bytes(content)
    resumed = imm_ray("search", str(path), "--storage", str(storage), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert trials_table(folder) == trials_table(searched)


#: λ may change every 5 epochs up to 40 (long enough for a kill to land mid-search).
PBT_EPOCHS = tuple(range(5, 41, 5))
PBT = Search(
    "pbt",
    Experiment("pbt", (Setting("IMM", lam=0.25),), epochs=PBT_EPOCHS, seeds=SEEDS),
    SearchSpace(param="r", low=0.0, high=0.9, scheduler="pbt", num_samples=4, seed=3),
)


@pytest.fixture(scope="module")
def population(tmp_path_factory) -> Path:
    """A tiny PBT search: 4 members, λ may change every 5 epochs up to 40."""
    storage = tmp_path_factory.mktemp("pbt")
    run_search(PBT, storage)
    return storage / "pbt"


def test_a_killed_pbt_search_resumes_to_the_same_schedules(population, tmp_path):
    """Killed after some members have passed a perturbation, and resumed: Tune's PBT state
    (scores, times, who waits at the next perturbation) comes back with its trials', and
    the search ends as the uninterrupted one, run in another process, did."""
    path = tmp_path / "pbt.yaml"
    path.write_text(
        f"name: pbt\nepochs: {list(PBT_EPOCHS)}\nseeds: 3\nsettings:\n  - label: IMM\n"
        "search: {param: r, low: 0.0, high: 0.9, scheduler: pbt, num_samples: 4, seed: 3}\n"
    )
    storage = tmp_path / "killed"
    folder = storage / "pbt"
    kill_mid_search(
        path,
        storage,
        lambda: recorded_time(folder) >= 10,
        "no member passed a perturbation in time",
    )
    assert recorded_terminated(folder) == 0, "the kill must land mid-search"
    # As a driver killed a little later may have done: the oldest checkpoint each member
    # keeps by the stored state is gone (see the next test).
    listed = listed_checkpoints(folder)
    latest = {last for last, _ in listed}
    for name in {kept[0] for _, kept in listed if len(kept) > 1 and kept[0] not in latest}:
        shutil.rmtree(folder / name, ignore_errors=True)  # the killed driver's may be gone
    resumed = imm_ray("search", str(path), "--storage", str(storage), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert trials_table(folder) == trials_table(population)
    first, again = (json.loads((f / "best.json").read_text()) for f in (population, folder))
    assert again == first


def listed_checkpoints(folder: Path) -> list[tuple[str, list[str]]]:
    """Each trial's checkpoints as Tune's newest stored state lists them, by
    ``<trial folder>/<checkpoint>``: (its latest, the ones it keeps)."""
    from ray.tune.trainable.metadata import _TrainingRunMetadata

    from tuning.resume import newest_state

    def name(result) -> str:
        return "/".join(Path(result.checkpoint.path).parts[-2:])

    state = json.loads(newest_state(folder).read_text())
    listed = []
    for _, meta in state["trial_data"]:
        manager = _TrainingRunMetadata.from_json_state(meta).checkpoint_manager
        latest = manager.latest_checkpoint_result
        listed.append((name(latest), [name(result) for result in manager._checkpoint_results]))
    return listed


def test_resume_forgets_the_checkpoints_a_killed_driver_deleted_after_its_state_was_stored(
    population, tmp_path, monkeypatch
):
    """Tune's stored state lists the checkpoints each trial keeps; a driver killed a while
    after the state was last stored may have deleted the oldest of them since. Tune fails
    to register a resumed trial's next checkpoint then (it deletes the oldest listed one
    first), so its checkpoint counter stays behind and the next one overwrites the last:
    the resumed PBT search took another course, or waited for ever. ``--resume`` drops
    them from the state first."""
    from ray.train import Checkpoint, CheckpointConfig
    from ray.train._internal.checkpoint_manager import _CheckpointManager
    from ray.train._internal.session import _TrainingResult

    from imm_ray import _compat
    from tuning.resume import forget_deleted_checkpoints

    # What Tune does with a kept checkpoint that is gone.
    manager = _CheckpointManager(CheckpointConfig(num_to_keep=1))
    manager._checkpoint_results = [
        _TrainingResult(Checkpoint(str(tmp_path / "gone" / "checkpoint_000000")), {})
    ]
    with pytest.raises(FileNotFoundError):
        manager.register_checkpoint(_TrainingResult(Checkpoint(str(tmp_path)), {}))

    folder = tmp_path / "pbt"
    shutil.copytree(population, folder)
    listed = listed_checkpoints(folder)
    latest = {last for last, _ in listed}
    # The oldest listed checkpoint of each member (none is any member's latest: a member
    # copying another's checkpoint lists it as its latest only).
    deleted = sorted(kept[0] for _, kept in listed if kept[0] not in latest)
    assert len(deleted) == len(listed) == 4
    for name in deleted:
        shutil.rmtree(folder / name)
    # On another Ray (the private path is not taken), the state is left as stored.
    stored = sorted(folder.glob("experiment_state-*.json"))[-1].read_bytes()
    with monkeypatch.context() as patch:
        patch.setattr(_compat, "tune_state_checkpoints", lambda: False)
        assert forget_deleted_checkpoints(folder) == []
    assert sorted(folder.glob("experiment_state-*.json"))[-1].read_bytes() == stored
    assert sorted(forget_deleted_checkpoints(folder)) == deleted
    assert listed_checkpoints(folder) == [
        (last, [name for name in kept if name not in deleted]) for last, kept in listed
    ]
    # The state is rewritten only where something is gone.
    state = sorted(folder.glob("experiment_state-*.json"))[-1].read_bytes()
    assert forget_deleted_checkpoints(folder) == []
    assert sorted(folder.glob("experiment_state-*.json"))[-1].read_bytes() == state


def test_pbt_writes_the_best_members_schedule_which_replayed_from_scratch_is_that_member(
    population, ray_session
):
    from imm_ray.rl.seeds import SeedReinforceConfig

    best = json.loads((population / "best.json").read_text())
    schedule, curve = best["schedule"], best["curve"]
    assert [point for point, _ in curve] == list(PBT_EPOCHS)
    rows = list(csv.reader((population / "schedule.csv").read_text().splitlines()))
    assert rows[0] == ["epochs", "lambda", "r", "reward"]
    assert [float(row[1]) for row in rows[1:]] == pytest.approx(
        [lambda_at(schedule, point) for point in PBT_EPOCHS], rel=1e-5
    )
    assert (population / "schedule.png").read_bytes()[:4] == b"\x89PNG"
    # Exploit copied some member's checkpoint, with a new λ: a schedule with a change.
    summaries = [
        json.loads(line)
        for result in population.glob("*/result.json")
        for line in result.read_text().splitlines()[-1:]
    ]
    assert any(len(row["schedule"]) > 1 for row in summaries)
    # Every member's result.json keeps all its rows, though members pause and start again
    # at every perturbation (Tune's loggers copied a stale stored file over the driver's).
    for result in population.glob("*/result.json"):
        rows = [json.loads(line) for line in result.read_text().splitlines()]
        assert [row["epochs"] for row in rows] == list(PBT_EPOCHS), result
    # The lineage's rewards are what a fresh run of its schedule gives, epoch for epoch:
    # every member trains the same seeds, and a copied checkpoint continues exactly.
    algo = (
        SeedReinforceConfig()
        .training(seeds=list(range(SEEDS)), epochs_per_iteration=5)
        .imm(lam=1.0)
        .build_algo()
    )
    try:
        for point, reward in curve:
            algo.set_lambda(lambda_at(schedule, point))
            algo.train_epochs(point - algo.epochs)
            assert float(algo.evaluate_seeds().mean()) == pytest.approx(reward, rel=1e-6)
    finally:
        algo.stop()


def test_a_member_restored_from_another_members_checkpoint_continues_where_it_was(
    ray_session, tmp_path
):
    from tuning.rl_search import RLSearchTrainable

    trial = EXPERIMENT.search_trial()
    leader = RLSearchTrainable(config={"trial": trial, "r": 0.2, "index": 0})
    follower = RLSearchTrainable(config={"trial": trial, "r": 0.7, "index": 1})
    fresh = RLSearchTrainable(config={"trial": trial, "r": 0.2, "index": 2})
    try:
        for _ in range(2):
            leader.train()
        leader.save_checkpoint(str(tmp_path))
        follower.train()  # 5 epochs of its own, then it copies the leader's 10
        follower.reset_config({"trial": trial, "r": 0.7, "index": 1})
        follower.load_checkpoint(str(tmp_path))
        result = follower.train()
        assert result["epochs"] == 15
        assert result["schedule"] == [[0, ratio_to_lambda(0.2)], [10, ratio_to_lambda(0.7)]]
        assert result["curves"]["reward"][:2] == leader.curve[:2]
        # What a member that trained this schedule from the start has at 15 epochs.
        for _ in range(2):
            fresh.train()
        fresh.lam = ratio_to_lambda(0.7)
        fresh.algo.set_lambda(fresh.lam)
        assert fresh.train()["values"] == result["values"]
    finally:
        for member in (leader, follower, fresh):
            member.stop()


def test_a_member_taken_up_from_an_older_index_stores_its_checkpoint_in_a_new_folder(
    ray_session, tmp_path
):
    """The RL search trial as synchronous PBT treats it (tuning.checkpoints): its second
    checkpoint is dropped by the driver and handed to a copying member; taken up again from
    the driver's index, the member stores its next checkpoint in a new folder, and the
    copied one still holds epoch 10."""
    import copy

    from ray.train._internal.storage import StorageContext

    from tuning.rl_search import HISTORY_FILE, RLSearchTrainable

    trial = EXPERIMENT.search_trial()
    storage = StorageContext(
        storage_path=str(tmp_path), experiment_dir_name="pbt", trial_dir_name="member"
    )
    config = {"trial": trial, "r": 0.2, "index": 0}
    member = RLSearchTrainable(config=config, storage=storage)
    driver = copy.copy(storage)
    try:
        member.train()
        registered = member.save()
        driver.current_checkpoint_index += 1
        member.train()
        copied = member.save()
        member.reset(config, storage=copy.copy(driver))
        member.restore(registered)
        member.train()
        later = member.save()
    finally:
        member.stop()
    names = [Path(c.checkpoint.path).name for c in (registered, copied, later)]
    assert names == ["checkpoint_000000", "checkpoint_000001", "checkpoint_000002"]
    history = json.loads((Path(copied.checkpoint.path) / HISTORY_FILE).read_text())
    assert history["curve"][-1][0] == 10


def test_bad_searches_exit_2_naming_the_field_before_ray_starts(tmp_path):
    cases = {
        ("--param", "x"): "--param: invalid choice: 'x'",
        ("--low", "0.5", "--high", "0.5"): "the range of r is empty or inverted",
        ("--low", "0.6", "--high", "0.2"): "the range of r is empty or inverted",
        ("--metric", "loss"): "metric must be a metric rl trials report: reward, got 'loss'",
        ("--mode", "best"): "--mode: invalid choice: 'best'",
        ("--scheduler", "pbt", "--search", "optuna"): "algorithm optuna cannot draw PBT's",
        ("--high", "1.5"): "high must be a number in [0, 1), got 1.5",
        ("--scheduler", "pbt", "--max-concurrent", "2"): "max_concurrent does not apply to PBT",
    }
    for args, message in cases.items():
        run = imm_ray("search", "rl-lambda", *args, "--storage", str(tmp_path / "s"), timeout=60)
        assert run.returncode == 2 and message in run.stderr, (args, run.stderr)
        assert "Traceback" not in run.stderr and "Started a local Ray" not in run.stderr
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    ("section", "error"),
    [
        ("param: foo", "search.yaml:6: search.param: param must be one of lambda, r, got 'foo'"),
        ("low: 0.5, high: 0.5", "search.yaml:6: search.high: the range of r is empty"),
        ("metric: loss", "search.yaml:6: search.metric: metric must be a metric rl trials"),
        ("mode: best", "search.yaml:6: search.mode: mode must be one of min, max, got 'best'"),
        ("sampler: tpe", "search.yaml:6: search.sampler: unknown key; allowed: algorithm,"),
        (
            "num_samples: 0",
            "search.yaml:6: search.num_samples: num_samples must be an integer >= 1",
        ),
    ],
)
def test_a_search_files_errors_name_the_key_and_line(tmp_path, section, error):
    from tuning.config_file import ConfigFileError, load_search_file

    path = tmp_path / "search.yaml"
    path.write_text(
        f"name: s\nepochs: [5, 10]\nseeds: 2\nsettings:\n  - label: IMM\nsearch: {{{section}}}\n"
    )
    with pytest.raises(ConfigFileError) as raised:
        load_search_file(path)
    assert str(raised.value).startswith(str(tmp_path / error.split(":")[0])) and error.split(
        ":", 1
    )[1] in str(raised.value)


def test_a_search_file_is_refused_by_sweep_and_a_sweep_file_by_search(tmp_path):
    from tuning.config_file import ConfigFileError, load_experiment, load_search_file

    path = search_file(tmp_path)
    with pytest.raises(ConfigFileError, match="search: this file is a search"):
        load_experiment(path)
    plain = tmp_path / "plain.yaml"
    plain.write_text("name: s\nepochs: [5]\nsettings:\n  - label: IMM\n")
    with pytest.raises(ConfigFileError, match="needs a search: section"):
        load_search_file(plain)
    two = tmp_path / "two.yaml"
    two.write_text(
        "name: s\nepochs: [5]\nsettings:\n  - label: IMM\n  - label: No IMM\n    imm: false\n"
        "search: {param: r}\n"
    )
    with pytest.raises(ConfigFileError, match="settings: a search varies λ of one IMM setting"):
        load_search_file(two)


class _Trial:
    """What the scheduler reads of a Tune trial: its id, config and last result."""

    def __init__(self, index: int, last_result: dict | None = None) -> None:
        self.trial_id = f"t{index}"
        self.config = {"index": index}
        self.last_result = last_result or {}


def test_batch_asha_compares_a_trial_with_earlier_batches_only():
    from ray.tune.schedulers import TrialScheduler

    from tuning.search_algorithms import BatchASHA

    asha = BatchASHA(time_attr="epochs", batch=2, grace_period=5, max_t=50, reduction_factor=3)
    asha.set_search_properties("reward", "max")
    assert asha.rungs == [5.0, 15.0, 45.0]
    trials = [_Trial(i) for i in range(5)]
    for trial in trials:
        asha.on_trial_add(None, trial)

    def report(i: int, epochs: int, reward: float) -> str:
        return asha.on_trial_result(None, trials[i], {"epochs": epochs, "reward": reward})

    # Batch 0 (trials 0, 1) has nothing earlier: never stopped, whatever it reports.
    assert report(0, 5, 1.0) == report(1, 5, 4.0) == TrialScheduler.CONTINUE
    # Batch 1 at rung 5: the cutoff is the 2/3 quantile of batch 0's [1, 4] = 3.0.
    assert report(2, 5, 2.9) == TrialScheduler.STOP
    assert report(3, 5, 3.0) == TrialScheduler.CONTINUE
    # Trial 3's own rung value does not count for its batch mate, only for later batches:
    # trial 4 (batch 2) at rung 5 sees [1, 4, 2.9, 3] → cutoff 3.0 (interpolated 2/3 quantile).
    assert asha.cutoff(5.0, 4) == pytest.approx(np.percentile([1.0, 4.0, 2.9, 3.0], 200 / 3))
    # Between rungs nothing is decided; a minimized metric flips the comparison.
    assert report(3, 10, -100.0) == TrialScheduler.CONTINUE
    low = BatchASHA(time_attr="epochs", batch=1, grace_period=5, max_t=50, reduction_factor=2)
    low.set_search_properties("ppl", "min")
    first, second = _Trial(0), _Trial(1)
    low.on_trial_add(None, first)
    low.on_trial_add(None, second)
    low.on_trial_result(None, first, {"epochs": 5, "ppl": 100.0})
    assert low.on_trial_result(None, second, {"epochs": 5, "ppl": 90.0}) == TrialScheduler.CONTINUE
    # A trial restored by --resume brings its curve: the rung records are rebuilt from it.
    again = BatchASHA(time_attr="epochs", batch=2, grace_period=5, max_t=50, reduction_factor=3)
    again.set_search_properties("reward", "max")
    for i, reward in ((0, 1.0), (1, 4.0)):
        again.on_trial_add(None, _Trial(i, {"curves": {"reward": [[5, reward], [10, reward]]}}))
    assert again.cutoff(5.0, 2) == asha.cutoff(5.0, 2) == pytest.approx(3.0)


def test_the_ordered_search_hands_results_over_a_batch_at_a_time_in_index_order():
    import optuna
    from ray.tune.search import Searcher

    from tuning.search_algorithms import OrderedSearch

    told: list[str] = []

    class Recording(Searcher):
        def __init__(self) -> None:
            super().__init__(metric="reward", mode="max")
            self.drawn = 0

        def suggest(self, trial_id: str) -> dict:
            self.drawn += 1
            return {"r": self.drawn / 10}

        def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
            told.append(trial_id)

    search = OrderedSearch(Recording(), live=2, batches=True)
    first, second = search.suggest("a"), search.suggest("b")
    assert (first, second) == ({"r": 0.1, "index": 0}, {"r": 0.2, "index": 1})
    assert search.suggest("c") is None  # the batch is full
    search.on_trial_complete("b", {"reward": 1.0})
    assert told == [] and search.suggest("c") is None  # "a" has not ended
    search.on_trial_complete("a", {"reward": 2.0})
    assert told == ["a", "b"]  # in index order, once the whole batch has ended
    assert search.suggest("c") == {"r": 0.3, "index": 2}
    assert optuna.__version__  # the dependency the real searcher wraps is installed


def test_the_ordered_search_is_rebuilt_from_its_trials_as_it_was():
    """``--resume`` replays the stored trials into a fresh search: the same suggestions
    under the same ids, each batch's results handed over in index order before the next
    batch is suggested, the running trials still running; a searcher that suggests
    something else is refused."""
    from ray.tune.search import Searcher

    from tuning.search_algorithms import OrderedSearch, StoredTrial

    class Recording(Searcher):
        def __init__(self) -> None:
            super().__init__(metric="reward", mode="max")
            self.calls: list[tuple] = []
            self.drawn = 0

        def suggest(self, trial_id: str) -> dict:
            self.drawn += 1
            self.calls.append(("suggest", trial_id))
            return {"r": self.drawn / 10}

        def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
            self.calls.append(("complete", trial_id, result and result["reward"], error))

    def stored(index: int, status: str) -> StoredTrial:
        config = {"r": (index + 1) / 10, "index": index, "trial": {"seeds": 3}}
        return StoredTrial(f"t{index}", index, config, status, {"reward": index, "epochs": 5})

    # Batch 0-1 ended (1 by an error), batch 2-3 half ended: 4 will be suggested next.
    trials = [stored(3, "RUNNING"), stored(1, "ERROR"), stored(0, "TERMINATED")]
    trials.append(stored(2, "TERMINATED"))
    live = OrderedSearch(Recording(), live=2, batches=True)
    for trial_id in ("t0", "t1"):
        live.suggest(trial_id)
    live.on_trial_complete("t1", error=True)
    live.on_trial_complete("t0", {"reward": 0, "epochs": 5})
    for trial_id in ("t2", "t3"):
        live.suggest(trial_id)
    live.on_trial_complete("t2", {"reward": 2, "epochs": 5})

    rebuilt = OrderedSearch(Recording(), live=2, batches=True)
    rebuilt.replay(trials)
    assert (
        rebuilt.inner.calls
        == live.inner.calls
        == [
            ("suggest", "t0"),
            ("suggest", "t1"),
            ("complete", "t0", 0, False),
            ("complete", "t1", None, True),
            ("suggest", "t2"),
            ("suggest", "t3"),
        ]
    )
    for search in (live, rebuilt):
        assert (search.count, search.running, search.batch_end) == (4, {"t3": 3}, 4)
        assert search.ended == {2: ("t2", {"reward": 2, "epochs": 5}, False)}
        search.on_trial_complete("t3", {"reward": 3, "epochs": 5})
        assert search.suggest("t4") == {"r": 0.5, "index": 4}
    assert rebuilt.inner.calls == live.inner.calls

    class Other(Recording):
        def suggest(self, trial_id: str) -> dict:
            return {"r": 0.7}

    with pytest.raises(RuntimeError, match="suggests {'r': 0.7} as trial 0.*not deterministic"):
        OrderedSearch(Other(), live=2, batches=True).replay(trials)
    with pytest.raises(RuntimeError, match="skip index 1"):
        OrderedSearch(Recording(), live=2, batches=True).replay([trials[2], trials[0]])
