"""The causal-LM experiment (issue 23): its trials, a tiny ``causal-lm`` sweep through
``imm-ray sweep`` that reports what the trainer computes, and a trial restarted from its
epoch-1 checkpoint that ends where an uninterrupted one does."""

from __future__ import annotations

import pytest
from sweep_checks import summary_rows
from trial_pids import assert_every_trial_wrote_its_pid

from imm_ray.restricted.kneser_ney import estimate_kneser_ney
from imm_ray.supervised.hf_lm.train import CausalLMConfig, train_causal_lm
from imm_ray.supervised.lm.corpus import load_corpus
from imm_ray.supervised.lm.synthetic import MarkovSource
from tuning.causal_lm import EXPERIMENTS, CausalLMExperiment, causal_lm_trainable
from tuning.lm import LMSetting


def test_causal_lm_plans_one_trial_per_method_and_seed_imm_first(tmp_path):
    experiment = EXPERIMENTS["causal-lm"].with_overrides(
        seeds=2, data=str(tmp_path), preset="tiny", epochs=2
    )
    trials = experiment.trials()
    assert len(trials) == 8 and [t["config"]["method"] for t in trials[:2]] == ["imm"] * 2
    assert {t["config"]["method"] for t in trials} == {"none", "noising", "imm", "serialized"}
    for trial in trials:
        assert trial["sizes"] == [1, 2] and trial["config"]["context"] == 16  # tiny
        assert CausalLMConfig(**trial["config"]).epochs == 2
    assert "Kneser–Ney bigram, bigram test" in experiment.curves()
    with pytest.raises(ValueError, match="k must be an integer >= 1, got 0"):
        CausalLMExperiment("bad", (LMSetting("a", "imm", {"k": 0}),))
    with pytest.raises(ValueError, match="preset must be one of tiny, small, got 'paper'"):
        EXPERIMENTS["causal-lm"].with_overrides(preset="paper").trials()


def test_tiny_causal_lm_sweep_reports_what_the_trainer_computes(tiny_sweeps, tmp_path):
    run = tiny_sweeps("causal-lm")  # 1 seed, tiny preset, 2 epochs
    result, storage = run.result, run.storage
    assert result.returncode == 0, result.stderr[-3000:]
    folder = storage / "causal-lm"
    experiment = EXPERIMENTS["causal-lm"]
    rows = summary_rows(folder, experiment)
    assert {epochs for _, epochs in rows} == {"1", "2"}
    trial_dirs = [d for d in folder.iterdir() if d.is_dir() and (d / "params.json").is_file()]
    assert len(trial_dirs) == 4
    for trial_dir in trial_dirs:  # Trainer's checkpoint of every epoch, as Tune kept it
        assert list(trial_dir.glob("checkpoint_*/trainer_state.json"))
    assert_every_trial_wrote_its_pid(folder)
    # The sweep's serialized trial reports what train_causal_lm computes for it.
    data = storage.parent / "data"
    corpus = load_corpus(data)
    bigram = estimate_kneser_ney(corpus.train, len(corpus.vocab), corpus.vocab.eos_id)
    config = CausalLMConfig.preset("tiny", method="serialized", epochs=2)
    _, expected = train_causal_lm(config, corpus, bigram, tmp_path / "direct")
    label = "Serialized IMM with KN bigram"
    for metric, name in (("valid_ppl", "valid"), ("test_ppl", "test")):
        mean = float(rows[(f"{label}, {name}", "2")]["mean"])
        assert mean == pytest.approx(expected[metric], rel=1e-4), metric
    kn = float(rows[("Kneser–Ney bigram, bigram test", "2")]["mean"])
    assert kn == pytest.approx(expected["kn_test_ppl"], abs=1e-4)  # the summary's 4 places


def test_a_causal_lm_trial_restarted_from_its_first_epoch_ends_as_an_uninterrupted_one(
    tmp_path, tune_outside
):
    from ray import tune

    kept, restart = tune_outside
    data = tmp_path / "data"
    MarkovSource.random(6, seed=5).write_corpus(data, (1200, 300, 300), seed=5)
    experiment = CausalLMExperiment(
        "restart",
        (LMSetting("IMM", "imm", {"k": 2, "every": 2}),),
        metrics=("valid_ppl", "test_ppl", "induced_test_ppl"),
        kn_label="KN",
        data=str(data),
        preset="tiny",
        overrides={"epochs": 2},
        seeds=(0,),
    )
    inputs = experiment.load_inputs()
    trial = experiment.trials()[0]
    causal_lm_trainable({"trial": trial}, inputs)
    first = [(row, checkpoint) for row, checkpoint in kept if row["size"] == 1]
    assert len(first) == 1 and first[0][1] is not None
    uninterrupted = [row for row, _ in kept if row["size"] == 2]
    assert {row["setting"] for row in uninterrupted} == {
        "IMM, valid",
        "IMM, test",
        "IMM, bigram test",
        "KN, bigram test",
    }
    del kept[:]
    restart[0] = tune.Checkpoint.from_directory(first[0][1])
    causal_lm_trainable({"trial": trial}, inputs)
    assert all(row["size"] == 2 for row, _ in kept)  # epoch 1 is not trained again

    def timeless(rows):
        return [{k: v for k, v in r.items() if k != "train_seconds"} for r in rows]

    assert timeless(row for row, _ in kept) == timeless(uninterrupted)
