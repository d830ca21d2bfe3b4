"""The LM and logistic kinds as searches (:mod:`tuning.search`): what their hooks refuse, a
search trial that reports what the sweep's trial at the same λ (or r) does, a logistic
search run per dataset size, and an LM search trial that continues a checkpoint exactly,
its own λ or another's."""

from __future__ import annotations

import dataclasses

import pytest

from imm_ray.checks import ConfigError
from imm_ray.restricted.kneser_ney import estimate_kneser_ney
from imm_ray.supervised.lm.corpus import load_corpus
from imm_ray.supervised.lm.train import LMConfig, LMTrainer
from imm_ray.supervised.logistic.train import Method
from tuning.lm import LMExperiment, LMSetting, lm_search_trainable
from tuning.logistic import LogisticExperiment, LogisticSetting, logistic_search_trainable
from tuning.report import read_trials
from tuning.search import BEST_CSV, Search, SearchSpace, run_search, run_searches
from tuning.sweep import run_sweep

LM_OPTIONS = {"epochs": 2, "max_batches": 10}
IMM = LMSetting("IMM", "imm")


def lm_experiment(data, settings=(IMM,), **kwargs) -> LMExperiment:
    options = {"metrics": ("valid_ppl",), "preset": "tiny", "seeds": (0,), **kwargs}
    return LMExperiment(
        "lm-search", settings, data=str(data), overrides=dict(LM_OPTIONS), **options
    )


def logistic_experiment(settings=None, **kwargs) -> LogisticExperiment:
    settings = settings or (LogisticSetting("IMM", Method("imm", ratio=0.5, max_steps=30)),)
    options = {"sizes": (2, 3), "runs": 4, "test_size": 200, "imm_trials": 1, **kwargs}
    return LogisticExperiment("logistic-search", settings, **options)


# (a) What a search needs of each kind.


@pytest.mark.parametrize(
    ("settings", "seeds", "field"),
    [
        ((LMSetting("IMM", "imm"), LMSetting("IMM 2", "imm", {"lam": 1.0})), (0,), "settings"),
        ((LMSetting("IMM", "imm"), LMSetting("none", "none")), (0,), "settings"),
        ((LMSetting("noising", "noising"),), (0,), "settings"),
        ((LMSetting("serialized", "serialized"),), (0,), "settings"),
        ((LMSetting("IMM", "imm"),), (0, 1), "seeds"),
    ],
)
def test_an_lm_search_needs_one_imm_setting_and_one_seed(tmp_path, settings, seeds, field):
    experiment = lm_experiment(tmp_path, settings, seeds=seeds)
    with pytest.raises(ConfigError) as error:
        experiment.search_trial()
    assert error.value.field == field
    search = Search("s", experiment, SearchSpace(param="lambda", low=0.1, high=2.0))
    with pytest.raises(ConfigError):
        search.trial()


def test_an_lm_search_trains_its_one_trial_every_epoch_for_its_budget(tmp_path):
    experiment = lm_experiment(tmp_path, (LMSetting("IMM", "imm", {"lam": 0.7, "epochs": 5}),))
    trial = experiment.search_trial()
    assert trial == experiment.trials()[0]
    assert trial["config"]["method"] == "imm" and trial["config"]["lam"] == 0.7
    assert experiment.search_points() == [1, 2, 3, 4, 5]
    assert experiment.search_metrics == {"valid_ppl": "min"}
    budget = experiment.search_budget(3)  # also over a setting's own epochs
    assert budget.search_points() == [1, 2, 3] and budget.search_trial()["config"]["epochs"] == 3
    with pytest.raises(ConfigError) as error:
        experiment.search_budget(0)
    assert error.value.field == "epochs"
    assert experiment.search_split() == [("", experiment)]


@pytest.mark.parametrize(
    ("settings", "sizes", "field"),
    [
        (
            (LogisticSetting("a", Method("imm")), LogisticSetting("b", Method("imm"))),
            (5,),
            "settings",
        ),
        ((LogisticSetting("a", Method("noising", ratio=0.5)),), (5,), "settings"),
        ((LogisticSetting("a", Method("baseline")),), (5,), "settings"),
        ((LogisticSetting("a", Method("imm")),), (5, 10), "sizes"),
    ],
)
def test_a_logistic_search_needs_one_imm_setting_and_one_size(settings, sizes, field):
    with pytest.raises(ConfigError) as error:
        logistic_experiment(settings, sizes=sizes).search_trial()
    assert error.value.field == field


def test_a_logistic_search_is_one_search_per_size_of_its_metric():
    experiment = logistic_experiment(sizes=(10, 2, 5))
    parts = experiment.search_split()
    assert [label for label, _ in parts] == ["n=2", "n=5", "n=10"]
    assert [part.sizes for _, part in parts] == [(2,), (5,), (10,)]
    assert parts[1][1].search_points() == [5]
    assert parts[1][1].search_trial()["sizes"] == [5]
    assert parts[1][1].search_trial()["runs"] == 4
    assert experiment.search_metrics == {"accuracy": "max"}
    risk = logistic_experiment(metric="imm_risk")
    assert risk.search_metrics == {"imm_risk": "min"}
    assert Search("s", risk, SearchSpace()).mode == "min"
    with pytest.raises(ConfigError) as error:
        experiment.search_budget(3)
    assert error.value.field == "epochs"
    pbt = SearchSpace(scheduler="pbt", num_samples=2, algorithm="random")
    with pytest.raises(ConfigError, match="scheduler pbt needs trials that checkpoint"):
        Search("s", parts[0][1], pbt).validate()


# (b) A search trial reports what the sweep's trial at the same value does.


def test_an_lm_search_trial_reports_the_sweep_trials_perplexities_at_its_lambda(
    ray_session, lm_data, tmp_path
):
    experiment = lm_experiment(lm_data)
    space = SearchSpace(
        param="lambda", low=0.1, high=2.0, num_samples=1, max_concurrent=1, algorithm="random"
    )
    report = run_search(Search("lm-search", experiment, space), tmp_path / "search")
    (summary,) = report.trials
    lam = summary.lam
    (trial,) = read_trials(tmp_path / "search" / "lm-search")
    rows = trial.rows
    assert [row["epoch"] for row in rows] == [1, 2]
    assert all(row["lambda"] == lam and row["index"] == 0 for row in rows)
    assert all(row["schedule"] == [[0, lam]] for row in rows)
    assert rows[-1]["curves"] == {"valid_ppl": [[r["epoch"], r["valid_ppl"]] for r in rows]}
    assert "valid_ppl_se" not in rows[-1]  # one seed
    assert rows[-1]["r"] == pytest.approx(lam / (1 + lam))
    assert report.best["lambda"] == lam and report.best["epoch"] == 2

    imm = LMSetting("IMM", "imm", {"lam": lam})
    sweep = dataclasses.replace(experiment, name="lm-sweep", settings=(imm,))
    folder = run_sweep(sweep, tmp_path / "sweep")
    (swept,) = read_trials(folder)
    assert {row["size"]: row["valid_ppl"] for row in swept.rows} == {
        row["epoch"]: row["valid_ppl"] for row in rows
    }


@pytest.fixture(scope="module")
def logistic_search(ray_session, tmp_path_factory):
    """A logistic search of two sizes, two trials each, run part by part."""
    space = SearchSpace(param="r", low=0.0, high=0.9, num_samples=2, algorithm="random")
    search = Search("logistic-search", logistic_experiment(), space)
    storage = tmp_path_factory.mktemp("logistic-search")
    return search, storage, run_searches(search, storage)


def test_a_logistic_search_part_scores_what_the_sweep_trial_at_its_r_does(
    logistic_search, tmp_path
):
    _, storage, _ = logistic_search
    rows = [trial.rows[-1] for trial in read_trials(storage / "logistic-search" / "n=2")]
    row = min(rows, key=lambda row: row["index"])
    r = row["r"]
    assert row["n"] == 2 and sorted(row["values"]) == ["0", "1", "2", "3"]
    values = list(row["values"].values())
    assert row["accuracy"] == pytest.approx(sum(values) / 4)
    assert row["accuracy_se"] > 0 and row["schedule"] == [[0, row["lambda"]]]
    assert row["curves"] == {"accuracy": [[2, row["accuracy"]]]}

    method = Method("imm", ratio=r, max_steps=30)
    sweep = logistic_experiment((LogisticSetting("IMM", method),), sizes=(2,))
    folder = run_sweep(dataclasses.replace(sweep, name="logistic-sweep"), tmp_path)
    (swept,) = read_trials(folder)
    assert swept.rows[-1]["size"] == 2 and swept.rows[-1]["values"] == row["values"]


# (c) A search of several sizes: one search per size, and the best r of each.


def test_a_logistic_search_of_two_sizes_writes_a_folder_per_size_and_their_best(
    logistic_search,
):
    search, storage, reports = logistic_search
    folder = storage / search.name
    assert len(reports) == 2
    for part, report in zip(("n=2", "n=3"), reports, strict=True):
        assert (folder / part / "trials.csv").is_file() and (folder / part / "best.json").is_file()
        assert report.best["search"] == part and report.best["trials"] == 2
        assert report.best["n"] == int(part[2:])
    lines = (folder / BEST_CSV).read_text().splitlines()
    assert lines[0] == "part,lambda,r,accuracy,accuracy_se,trials"
    assert [line.split(",")[0] for line in lines[1:]] == ["n=2", "n=3"]
    for line, report in zip(lines[1:], reports, strict=True):
        assert float(line.split(",")[2]) == pytest.approx(report.best["r"], rel=1e-5)


# (d) An LM search trial continues a checkpoint exactly, with its own λ.


def test_an_lm_trainer_restored_mid_run_continues_exactly_and_with_a_new_lambda(lm_data, tmp_path):
    corpus = load_corpus(lm_data)
    bigram = estimate_kneser_ney(corpus.train, len(corpus.vocab), corpus.vocab.eos_id)

    def trainer(lam: float) -> LMTrainer:
        config = LMConfig.preset("tiny", method="imm", lam=lam, **LM_OPTIONS)
        return LMTrainer(config, corpus, bigram)

    straight = trainer(0.5)
    expected = [straight.train_epoch()["valid_ppl"] for _ in range(2)]
    first = trainer(0.5)
    assert first.train_epoch()["valid_ppl"] == expected[0]
    first.save(tmp_path)
    resumed = trainer(0.5)
    resumed.restore(tmp_path)
    assert resumed.train_epoch()["valid_ppl"] == expected[1]

    other = trainer(1.5)
    with pytest.raises(ValueError, match="differs in lam"):
        other.restore(tmp_path)  # a sweep's trial continues only its own configuration
    other.restore(tmp_path, free=("lam",))
    assert other.epoch == 1 and other.config.lam == 1.5  # not the checkpoint's 0.5
    assert other.train_epoch()["valid_ppl"] != expected[1]


def test_an_lm_search_trial_continues_a_checkpoint_with_its_own_lambda(lm_data, tune_outside):
    from ray import tune

    kept, restart = tune_outside
    experiment = lm_experiment(lm_data)
    inputs = experiment.load_inputs()
    trial = experiment.search_trial()
    lm_search_trainable({"trial": trial, "lambda": 0.5, "index": 3}, inputs)
    (one, after_one), (two, _) = kept
    assert [one["epoch"], two["epoch"]] == [1, 2] and two["index"] == 3
    assert two["schedule"] == [[0, 0.5]]
    assert two["curves"] == {"valid_ppl": [[1, one["valid_ppl"]], [2, two["valid_ppl"]]]}

    # Its own checkpoint at epoch 1, as a restarted trial gets it: the same epoch 2.
    restart[0] = tune.Checkpoint.from_directory(after_one)
    lm_search_trainable({"trial": trial, "lambda": 0.5, "index": 3}, inputs)
    (again, _) = kept[2]
    timeless = {k: v for k, v in two.items() if k != "epoch_seconds"}
    assert {k: v for k, v in again.items() if k != "epoch_seconds"} == timeless

    # A PBT member that copies it (as r): λ 1.5 from epoch 1 on, the lineage's curve.
    lm_search_trainable({"trial": trial, "r": 0.6, "index": 1}, inputs)
    (member, _) = kept[3]
    assert member["epoch"] == 2 and member["index"] == 1
    assert member["lambda"] == pytest.approx(1.5) and member["r"] == pytest.approx(0.6)
    assert member["schedule"] == [[0, 0.5], [1, member["lambda"]]]
    assert member["curves"]["valid_ppl"][0] == [1, one["valid_ppl"]]
    assert member["valid_ppl"] != two["valid_ppl"]


def test_an_lm_pbt_search_ends_every_member_trained_with_its_own_last_lambda(
    ray_session, lm_data, tmp_path
):
    """Two members, λ perturbed after epoch 1: the worse continues the better's checkpoint
    with a λ of its own; neither is perturbed at its last epoch (a function trainable's
    last result ends it), so each ends trained, on its own schedule."""
    space = SearchSpace(
        param="lambda",
        low=0.05,
        high=3.0,
        scheduler="pbt",
        num_samples=2,
        quantile_fraction=0.5,
        resample_probability=1.0,
    )
    run_search(Search("lm-pbt", lm_experiment(lm_data), space), tmp_path)
    trials = read_trials(tmp_path / "lm-pbt")
    finals = [trial.rows[-1] for trial in trials]
    assert sorted(row["index"] for row in finals) == [0, 1]
    assert all(row["epoch"] == 2 and row["done"] for row in finals)
    # Each member's last result has its own (latest) λ, the one in its config.
    assert all(trial.rows[-1]["lambda"] == trial.params["lambda"] for trial in trials)
    (top,) = [row for row in finals if len(row["schedule"]) == 1]
    (member,) = [row for row in finals if len(row["schedule"]) == 2]
    assert member["schedule"] == [[0, top["lambda"]], [1, member["lambda"]]]
    assert member["curves"]["valid_ppl"][0] == top["curves"]["valid_ppl"][0]
    assert member["valid_ppl"] != top["valid_ppl"]


def test_a_logistic_search_trial_trains_at_the_searched_r_or_at_lambdas_r(tune_outside):
    kept, _ = tune_outside
    trial = logistic_experiment(sizes=(3,)).search_trial()
    logistic_search_trainable({"trial": trial, "lambda": 1.5, "index": 0}, {})
    logistic_search_trainable({"trial": trial, "r": 0.6, "index": 1}, {})
    (by_lambda, no_checkpoint), (by_r, _) = kept
    assert no_checkpoint is None  # it reports once
    assert by_lambda["r"] == by_r["r"] == 0.6 and by_lambda["values"] == by_r["values"]
    assert by_lambda["lambda"] == 1.5 and by_r["lambda"] == pytest.approx(1.5)
    assert [by_lambda["index"], by_r["index"]] == [0, 1]
    assert by_r["n"] == 3 and by_r["schedule"] == [[0, by_r["lambda"]]]
    assert by_r["curves"] == {"accuracy": [[3, by_r["accuracy"]]]}
    assert by_r["node_id"] == "node-a" and by_r["device"] == "cpu"
