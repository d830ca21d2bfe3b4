"""Inputs read once by the driver (``load_inputs``), and trials that train on what they are
handed rather than on the driver's paths; every row says where its trial ran.

The trainables run here outside Tune (:func:`fake_tune`: their rows are kept, their node
is ``node-a``), after the input folders are gone, with NumPy arrays read-only as Ray's
object store hands them out. ``test_inputs_cluster.py`` runs the same on a Ray cluster.
"""

from __future__ import annotations

import shutil
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from tiny_inputs import tiny_bert_folders, tiny_table2

import tuning.placement
from imm_ray.restricted.kneser_ney import estimate_kneser_ney
from imm_ray.restricted.target import TargetSpec
from imm_ray.supervised.lm.corpus import load_corpus
from imm_ray.supervised.lm.synthetic import MarkovSource
from imm_ray.supervised.lm.train import LMTrainer
from imm_ray.supervised.logistic.data import Problem
from imm_ray.supervised.logistic.train import Method
from tuning.lm import LMExperiment, LMSetting, lm_trainable
from tuning.logistic import LogisticExperiment, LogisticSetting, logistic_trainable
from tuning.placement import Placement
from tuning.progress import GpuWarnings
from tuning.rl import Experiment, Setting, rl_trainable, run_trial


@pytest.fixture
def fake_tune(monkeypatch, tmp_path):
    """Runs a trainable outside Tune: its trial folder is ``tmp_path``, it has no checkpoint,
    its node is ``node-a``; yields the rows it reports."""
    from ray import tune

    rows: list[dict] = []
    storage = SimpleNamespace(
        trial_driver_staging_path=str(tmp_path), trial_working_directory=str(tmp_path / "work")
    )
    context = SimpleNamespace(get_trial_dir=lambda: str(tmp_path), get_storage=lambda: storage)
    monkeypatch.setattr(tune, "get_context", lambda: context)
    monkeypatch.setattr(tune, "get_checkpoint", lambda: None)
    monkeypatch.setattr(tune, "report", lambda metrics, checkpoint=None: rows.append(metrics))
    monkeypatch.setattr(tuning.placement, "node_id", lambda: "node-a")
    threads = torch.get_num_threads()
    yield rows
    torch.set_num_threads(threads)


def read_only(value):
    """``value`` with its NumPy arrays read-only, as Ray's object store hands them out."""
    for array in (v for v in vars(value).values() if isinstance(v, np.ndarray)):
        array.flags.writeable = False
    return value


def by_setting(rows: list[dict]) -> dict[tuple[str, int], dict]:
    return {(row["setting"], row["size"]): row["values"] for row in rows}


def test_a_trial_given_a_gpu_torch_cannot_use_trains_on_the_cpu(monkeypatch):
    monkeypatch.setattr(tuning.placement, "node_id", lambda: "node-a")
    assert not torch.cuda.is_available()  # the CPU build of torch: no GPU is usable here
    asked = Placement.of_trial(wants_gpu=True)
    assert asked == Placement("node-a", "cpu", gpu_unusable=True)
    assert not asked.on_gpu
    assert Placement.of_trial(wants_gpu=False).row() == {
        "node_id": "node-a",
        "device": "cpu",
        "gpu_unusable": False,
    }


def test_the_driver_warns_once_per_trial_whose_gpu_is_unusable(capsys):
    callback = GpuWarnings()

    def trial(trial_id, setting, tag):
        return SimpleNamespace(
            trial_id=trial_id, config={"trial": {"setting": setting, "tag": tag}}
        )

    imm, none = trial("t1", "IMM", "seed0"), trial("t2", "No IMM", "seed0")
    fine = trial("t3", "IMM", "seed1")
    for _ in range(3):  # several rows per trial
        callback.on_trial_result(0, [], imm, {"gpu_unusable": True, "node_id": "ab12"})
        callback.on_trial_result(
            0, [], none, {"gpu_unusable": True, "node_id": "cd34", "node_ip": "127.0.0.1"}
        )
        callback.on_trial_result(0, [], fine, {"gpu_unusable": False, "node_id": "ab12"})
    assert capsys.readouterr().err.splitlines() == [
        "imm-ray: warning: trial IMM (seed0) was given a GPU on node ab12 that torch cannot "
        "use (no CUDA device there); it trains on CPU",
        "imm-ray: warning: trial No IMM (seed0) was given a GPU on node cd34 (127.0.0.1) that "
        "torch cannot use (no CUDA device there); it trains on CPU",
    ]


def test_an_lm_trial_trains_on_the_corpus_and_bigram_it_is_handed(tmp_path, fake_tune):
    data = tmp_path / "data"
    MarkovSource.random(6, seed=5).write_corpus(data, (1500, 300, 300), seed=5)
    experiment = LMExperiment(
        "lm",
        (LMSetting("IMM", "imm"),),
        metrics=("valid_ppl", "induced_test_ppl"),
        kn_label="KN",
        data=str(data),
        preset="tiny",
        overrides={"epochs": 2, "max_batches": 6},
        seeds=(3,),
    )
    inputs = experiment.load_inputs()
    assert set(inputs) == {"corpus", "bigram"}
    torch.set_num_threads(1)  # as the trial does, with one CPU
    corpus = load_corpus(data)
    bigram = estimate_kneser_ney(corpus.train, len(corpus.vocab), corpus.vocab.eos_id)
    trainer = LMTrainer(experiment.config(experiment.settings[0], 3), corpus, bigram)
    valid = [trainer.train_epoch()["valid_ppl"] for _ in range(2)]
    final = trainer.evaluate()

    shutil.rmtree(data)
    read_only(inputs["corpus"])
    (trial,) = experiment.trials()
    assert "data" not in trial  # a trial names no folder
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # e.g. torch on a read-only array
        lm_trainable({"trial": trial}, inputs)
    on_cpu = fake_tune[:]
    # A trial that asked for a GPU (its config says cuda) and found none: the same run.
    on_gpu = {**trial, "config": {**trial["config"], "device": "cuda"}}
    lm_trainable({"trial": on_gpu}, inputs)
    asked_gpu = fake_tune[len(on_cpu) :]
    rows = by_setting(on_cpu)
    assert rows[("IMM, valid", 1)] == {"3": valid[0]}
    assert rows[("IMM, valid", 2)] == {"3": valid[1]}
    assert rows[("IMM, bigram test", 2)] == {"3": final["induced_test_ppl"]}
    assert rows[("KN, bigram test", 2)] == {"3": final["kn_test_ppl"]}
    assert by_setting(asked_gpu) == rows
    assert {(r["node_id"], r["device"], r["gpu_unusable"]) for r in on_cpu} == {
        ("node-a", "cpu", False)
    }
    assert {(r["device"], r["gpu_unusable"]) for r in asked_gpu} == {("cpu", True)}


def test_an_rl_trial_trains_with_the_drivers_table_and_solves_nothing(
    ray_session, fake_tune, monkeypatch
):
    experiment = Experiment(
        "rl",
        (Setting("IMM", lam=0.5), Setting("IMM again", lam=1.0), Setting("No", imm=False)),
        epochs=(2, 4),
        seeds=2,
    )
    inputs = experiment.load_inputs()
    assert len(inputs["tables"]) == 1  # two settings, one target: solved once
    trial = experiment.trials()[0]
    solved_here = run_trial(trial)

    def refuse(*args, **kwargs):
        raise AssertionError("a trial solved its target")

    monkeypatch.setattr(TargetSpec, "table", refuse)
    rl_trainable({"trial": trial}, inputs)
    # A trial given a GPU that torch cannot use: RLlib's learner stays on the CPU.
    rl_trainable({"trial": {**trial, "gpus": 0.25}}, inputs)
    on_cpu, asked_gpu = fake_tune[:2], fake_tune[2:]
    for rows in (on_cpu, asked_gpu):
        values = {row["size"]: row["values"] for row in rows}
        assert values == {e: {str(s): v for s, v in solved_here[e].items()} for e in (2, 4)}
    assert {(r["node_id"], r["device"], r["gpu_unusable"]) for r in on_cpu} == {
        ("node-a", "cpu", False)
    }
    assert {(r["device"], r["gpu_unusable"]) for r in asked_gpu} == {("cpu", True)}


def test_a_logistic_trial_needs_no_inputs_and_falls_back_to_the_cpu(fake_tune):
    experiment = LogisticExperiment(
        "logistic",
        (LogisticSetting("Baseline", Method("baseline")),),
        sizes=(2, 4),
        runs=3,
        problem=Problem(),
        test_size=50,
        gpus_per_trial=0.5,
    )
    assert experiment.load_inputs() == {}
    (trial,) = experiment.trials()
    logistic_trainable({"trial": trial}, {})
    logistic_trainable({"trial": {**trial, "gpus": 0}}, {})
    asked_gpu, on_cpu = fake_tune[:2], fake_tune[2:]
    assert [r["values"] for r in asked_gpu] == [r["values"] for r in on_cpu]
    assert {(r["device"], r["gpu_unusable"]) for r in asked_gpu} == {("cpu", True)}
    assert {(r["node_id"], r["device"], r["gpu_unusable"]) for r in on_cpu} == {
        ("node-a", "cpu", False)
    }


def test_the_bert_driver_reads_each_input_once_and_a_trial_trains_on_them(fake_tune, tmp_path):
    import imm_ray.supervised.bert.finetune as finetune_module
    from imm_ray.supervised.bert.finetune import finetune, prepare_run
    from tuning.bert import bert_trainable

    bert_folders = tiny_bert_folders(tmp_path)
    experiment = tiny_table2(*bert_folders)
    reads: list[str] = []
    with pytest.MonkeyPatch.context() as spy:
        for name in ("read_checkpoint", "restricted_model"):
            read = getattr(finetune_module, name)
            spy.setattr(
                finetune_module, name, lambda *a, _r=read, _n=name: [reads.append(_n), _r(*a)][1]
            )
        inputs = experiment.load_inputs()
    # One read of the checkpoint and one bigram for both settings, both methods checked.
    assert sorted(reads) == ["read_checkpoint", "restricted_model"]
    (run_inputs,) = inputs["runs"].values()
    assert sorted(run_inputs.checkpoint) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    torch.set_num_threads(1)
    config = experiment.config(experiment.settings[1], 1)
    expected = finetune(prepare_run(config), tmp_path / "straight", save=True)

    for folder in bert_folders:
        shutil.rmtree(folder)
    read_only(run_inputs)
    (trial,) = [t for t in experiment.trials() if t["config"]["method"] == "imm"]
    bert_trainable({"trial": trial}, inputs)
    on_cpu = fake_tune[:]
    # Asked for a GPU with bf16 and found none: fp32 on the CPU, the same run.
    on_gpu = {**trial, "config": {**trial["config"], "device": "cuda", "precision": "bf16"}}
    bert_trainable({"trial": on_gpu}, inputs)
    asked_gpu = fake_tune[len(on_cpu) :]
    values = {(r["setting"], r["size"]): r["values"] for r in on_cpu}
    assert values[("+MLM+IMM, dev", 2)] == {"1": 100 * expected["dev_mcc"]}
    assert values[("+MLM+IMM, test", 2)] == {"1": 100 * expected["test_mcc"]}
    assert (on_cpu[-1]["imm_risk"], on_cpu[-1]["task_loss"]) == (
        expected["imm_risk"],
        expected["task_loss"],
    )
    assert [r["values"] for r in asked_gpu] == [r["values"] for r in on_cpu]
    assert {(r["node_id"], r["device"], r["gpu_unusable"]) for r in on_cpu} == {
        ("node-a", "cpu", False)
    }
    assert {(r["device"], r["gpu_unusable"]) for r in asked_gpu} == {("cpu", True)}
