"""``--mlflow`` of the ``train`` commands, read back with ``MlflowClient``: ``train rl`` (a
run per setting and seed under a parent, in a store at a URI given), ``train lm`` (each
epoch, in the default store beside its checkpoints; ``--resume`` a run of its own),
``train causal-lm`` (transformers' own callback, in a ``file:`` store) and ``train bert``
(the default store in ``results/`` when it keeps no files). Every command that takes
``--mlflow`` refuses it in one line naming the extra where MLflow is not installed, and a
word that is not a URI. The sweeps': ``tests/tuning/test_sweep_tracking.py``."""

from __future__ import annotations

import argparse
import csv
import re
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient
from test_cli import COMMANDS
from test_lm_train_cli import run
from tiny_bert import TINY_BERT_TRAINING, markov_corpus

from imm_ray.cli import main
from imm_ray.supervised.lm.synthetic import MarkovSource


def runs_of(uri: str, experiment: str):
    """The client of store ``uri`` and the runs of its ``experiment``, oldest first."""
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment!r} in {uri}"
    runs = client.search_runs([found.experiment_id], order_by=["attributes.start_time ASC"])
    return client, runs


def history(client: MlflowClient, run, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]


def printed(pattern: str, out: str) -> float:
    found = re.search(pattern, out)
    assert found, out
    return float(found.group(1))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("markov")
    MarkovSource.random(6, seed=3).write_corpus(folder, (1500, 300, 300), seed=3)
    return folder


def test_train_rl_logs_a_run_per_setting_and_seed_under_a_parent(ray_session, tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'store' / 'rl.db'}"
    output = tmp_path / "out" / "rl.csv"
    args = ["--compare", "--epochs", "2", "4", "--seeds", "2", "--output", str(output)]
    code, out, err = run(capsys, "train", "rl", *args, "--mlflow", uri)
    assert code == 0, err
    assert f"mlflow: {uri}" in out
    client, runs = runs_of(uri, "train-rl")
    (parent,) = [r for r in runs if r.info.run_name == "train rl"]
    assert parent.info.status == "FINISHED" and parent.data.params["epochs"] == "[2, 4]"
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} == {"table.txt", "rl.csv"}
    assert parent.info.artifact_uri.startswith((tmp_path / "store" / "mlartifacts").as_uri())
    rows = list(csv.DictReader(output.open()))
    seeds = [r for r in runs if r is not parent]
    assert sorted((r.data.params["setting"], r.data.params["seed"]) for r in seeds) == [
        ("imm", "0"), ("imm", "1"), ("no-imm", "0"), ("no-imm", "1"),
    ]  # fmt: skip
    for seed in seeds:
        params = seed.data.params
        assert seed.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert seed.info.run_name == f"{params['setting']} seed{params['seed']}"
        mine = [r for r in rows if (r["method"], r["seed"]) == (params["setting"], params["seed"])]
        for key, column in (("eval_return_mean", "eval_return_mean"), ("lam", "lam")):
            steps, values = zip(*history(client, seed, key), strict=True)
            assert steps == tuple(int(r["epochs"]) for r in mine), key
            assert values == pytest.approx([float(r[column]) for r in mine], abs=1e-6), key


def test_train_lm_logs_each_epoch_beside_its_checkpoints_and_a_resume_as_a_run_of_its_own(
    data, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "lm" / "imm-seed0"
    common = ["train", "lm", "--data", str(data), "--preset", "tiny", "--max-batches", "10"]
    common += ["--threads", "1", "--checkpoint-dir", str(folder), "--mlflow"]
    code, out, err = run(capsys, *common, "--epochs", "2")
    assert code == 0, err
    uri = f"sqlite:///{tmp_path / 'lm' / 'mlflow.db'}"
    assert f"mlflow: {uri}" in out
    code, again, err = run(capsys, *common, "--epochs", "3", "--resume")
    assert code == 0, err
    client, (first, second) = runs_of(uri, "train-lm")
    assert first.info.run_name == "imm-seed0" and first.info.status == "FINISHED"
    params = first.data.params
    assert (params["method"], params["seed"], params["preset"], params["epochs"]) == (
        "imm", "0", "tiny", "2",
    )  # fmt: skip
    for key in ("train_ppl", "valid_ppl", "epoch_seconds"):
        assert [step for step, _ in history(client, first, key)] == [1, 2], key
    test = printed(r"test perplexity ([\d.]+)", out)
    assert history(client, first, "test_ppl") == [(2, pytest.approx(test, abs=0.005))]
    assert history(client, first, "valid_ppl")[-1][1] == pytest.approx(
        printed(r"valid perplexity ([\d.]+)", out), abs=0.005
    )
    # The resumed epoch: a run of its own, naming the one it continues.
    assert second.data.tags["imm_ray.resumes"] == first.info.run_id
    assert second.data.tags["imm_ray.output"] == str(folder)
    assert [step for step, _ in history(client, second, "train_ppl")] == [3]
    assert not (tmp_path / "mlruns").exists()


def test_train_causal_lm_logs_each_step_through_transformers_callback(
    data, tmp_path, capsys, monkeypatch
):
    from imm_ray.supervised.hf_lm.train import CausalLMConfig, training_arguments

    # The command lets MLflow 3 open a file: store (which it refuses by default).
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    uri = (tmp_path / "store").as_uri()
    output = tmp_path / "run"
    args = ["--data", str(data), "--preset", "tiny", "--epochs", "2", "--threads", "1"]
    code, out, err = run(
        capsys, "train", "causal-lm", *args, "--output-dir", str(output), "--mlflow", uri
    )
    assert code == 0, err
    client, (logged,) = runs_of(uri, "train-causal-lm")
    assert logged.info.status == "FINISHED" and logged.info.run_name == "imm-seed0"
    params = logged.data.params
    assert (params["method"], params["seed"], params["preset"]) == ("imm", "0", "tiny")
    assert params["num_train_epochs"] == "2" and params["n_layer"] == "2"  # transformers'
    steps = int(printed(r"(\d+) steps", out))
    every = training_arguments(CausalLMConfig.preset("tiny"), output, steps // 2).logging_steps
    assert [step for step, _ in history(client, logged, "loss")] == list(
        range(every, steps + 1, every)
    )
    assert [step for step, _ in history(client, logged, "imm_risk")] == list(
        range(every, steps + 1, every)
    )
    test = printed(r"test perplexity ([\d.]+)", out)
    assert history(client, logged, "test_ppl") == [(steps, pytest.approx(test, abs=0.005))]


def test_train_bert_without_an_output_dir_logs_to_results(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    corpus = markov_corpus(tmp_path / "corpus", 30, 7, (3000, 600, 600))
    task = tmp_path / "task"
    made = ["lm", "make-acceptability", str(corpus), "--out", str(task), "--max-examples", "24"]
    assert main(made) == 0
    args = ["--task", "acceptability", "--data", str(task), "--model", "tiny"]
    args += ["--corpus", str(corpus), "--epochs", "2", *TINY_BERT_TRAINING, "--threads", "1"]
    code, out, err = run(capsys, "train", "bert", *args, "--mlflow")
    assert code == 0, err
    uri = f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}"
    assert f"mlflow: {uri}" in out
    client, (logged,) = runs_of(uri, "train-bert")
    params = logged.data.params
    assert (params["method"], params["seed"], params["model"]) == ("imm", "0", "tiny")
    assert params["num_train_epochs"] == "2"  # transformers'
    steps = int(printed(r"(\d+) steps", out))
    # Dev after each epoch, by transformers' callback; the scores after training are the
    # command's, under their own names, at the last step.
    assert [step for step, _ in history(client, logged, "eval_mcc")] == [steps // 2, steps]
    dev, test = printed(r"dev mcc (-?[\d.]+)", out), printed(r"test mcc (-?[\d.]+)", out)
    assert history(client, logged, "dev_mcc") == [(steps, pytest.approx(dev, abs=5e-5))]
    assert history(client, logged, "test_mcc") == [(steps, pytest.approx(test, abs=5e-5))]
    assert len(history(client, logged, "imm_risk")) == len(history(client, logged, "loss"))


#: The commands that take --mlflow, read off the parser (one added later is walked too).
TRACKED = [
    path
    for path, parser in COMMANDS.items()
    if any(action.dest == "mlflow" for action in parser._actions)
]

#: ``imm-ray ARGS`` where ``import mlflow`` fails, as where the extra is not installed.
WITHOUT_MLFLOW = """
import sys
sys.modules["mlflow"] = None
from imm_ray.cli import run
sys.argv[0] = "imm-ray"
run()
"""


def test_sweep_and_every_train_command_that_trains_take_mlflow():
    assert set(TRACKED) == {
        ("sweep",), ("train", "rl"), ("train", "lm"), ("train", "bert"), ("train", "causal-lm"),
    }  # fmt: skip


@pytest.mark.parametrize("path", TRACKED, ids=" ".join)
def test_mlflow_without_the_extra_is_one_line_naming_it_before_any_work(path, tmp_path):
    required = [
        action
        for action in COMMANDS[path]._actions
        if (action.required or not action.option_strings)
        and not isinstance(action, argparse._SubParsersAction)
    ]
    given = [word for action in required for word in (*action.option_strings[:1], "x")]
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_MLFLOW, *path, *given, "--mlflow"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr == (
        "imm-ray: error: --mlflow needs MLflow: pip install 'imm-ray[tracking]'\n"
    )
    assert result.stdout == "" and not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sweep", "--mlflow", "figure2"], "--mlflow must be a tracking URI such as sqlite:///"),
        (
            ["sweep", "figure2", "--storage", "s3://bucket/imm", "--mlflow"],
            "--mlflow: without a URI its store is a SQLite file beside the results, and "
            "--storage s3://bucket/imm is not a local folder; give a tracking URI",
        ),
    ],
)
def test_a_store_that_cannot_be_is_refused_before_any_work(args, message, capsys):
    code, _, err = run(capsys, *args)
    assert code == 2 and err.startswith(f"imm-ray: error: {message}"), err


def test_seeds_and_nested_fields_are_written_as_parameters():
    from imm_ray.tracking import flat_params, seeds_text

    assert seeds_text([5, 0, 1, 2, 7, 8]) == "0-2,5,7-8" and seeds_text([3]) == "3"
    assert seeds_text(range(2000)) == "0-1999"
    params = flat_params({"target": {"kind": "softmax", "T": 0.5}, "groups": [1, 2], "x": None})
    assert params == {"target/kind": "softmax", "target/T": "0.5", "groups": "[1, 2]", "x": "None"}
    long = flat_params({"settings": "y" * 7000})["settings"]
    assert len(long) == 6000 and long.endswith("…")
