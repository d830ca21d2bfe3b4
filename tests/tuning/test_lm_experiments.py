"""The language-model experiments: their trials, and a tiny table1 through ``imm-ray sweep``."""

from __future__ import annotations

import pytest
from sweep_checks import assert_plans_two_seeds_imm_first, summary_rows
from trial_pids import assert_every_trial_wrote_its_pid

from imm_ray.restricted.kneser_ney import estimate_kneser_ney
from imm_ray.supervised.lm.corpus import load_corpus
from imm_ray.supervised.lm.synthetic import MarkovSource
from imm_ray.supervised.lm.train import LMConfig, LMTrainer
from tuning.lm import EXPERIMENTS, LMExperiment, LMSetting


def test_table1_plans_one_trial_per_setting_and_seed_imm_first(tmp_path):
    experiment = EXPERIMENTS["table1"].with_overrides(
        seeds=2, data=str(tmp_path), preset="tiny", epochs=2, max_batches=7
    )
    assert_plans_two_seeds_imm_first(experiment, 8, max_batches=7)
    assert "Kneser–Ney bigram, bigram test" in experiment.curves()
    assert "IMM with KN bigram, test" in experiment.curves()


def test_settings_override_the_experiment_and_bad_fields_fail_at_construction():
    lam = EXPERIMENTS["lm-lambda"]
    assert [t["config"]["lam"] for t in lam.trials()] == [0.05, 0.2, 0.5, 1.0]
    with pytest.raises(ValueError, match="k must be an integer >= 1, got 0"):
        LMExperiment("bad", (LMSetting("a", "imm", {"k": 0}),))
    with pytest.raises(ValueError, match="metrics must be a non-empty list of"):
        LMExperiment("bad", (LMSetting("a"),), metrics=("bleu",))
    with pytest.raises(ValueError, match="kn_label needs an induced-bigram metric"):
        LMExperiment("bad", (LMSetting("a"),), kn_label="KN")


def test_tiny_table1_sweep_runs_end_to_end_through_the_cli(tiny_sweeps):
    # table1, 1 seed, tiny preset, 1 epoch of 12 batches
    run = tiny_sweeps("lm")
    result, storage = run.result, run.storage
    data = storage.parent / "data"
    assert result.returncode == 0, result.stderr[-3000:]
    # Every epoch checkpoints: Ray Train's notice of each, and Tune's of the snapshots they
    # force, are filtered at their loggers.
    for noise in ("Checkpoint successfully created", "snapshotting has been triggered"):
        assert noise not in result.stdout + result.stderr
    folder = storage / "table1"
    experiment = EXPERIMENTS["table1"]
    rows = summary_rows(folder, experiment)
    assert all(epochs == "1" and r["seeds"] == "1" for (_, epochs), r in rows.items())
    assert (folder / "summary.md").is_file() and (folder / "figure.png").stat().st_size > 0
    trial_dirs = [d for d in folder.iterdir() if d.is_dir() and (d / "params.json").is_file()]
    assert len(trial_dirs) == 4
    for trial_dir in trial_dirs:
        assert list(trial_dir.glob("checkpoint_*/checkpoint.pt"))
    assert_every_trial_wrote_its_pid(folder)

    # The sweep reports what the trainer computes for the same configuration.
    corpus = load_corpus(data)
    bigram = estimate_kneser_ney(corpus.train, len(corpus.vocab), corpus.vocab.eos_id)
    config = LMConfig.preset("tiny", method="none", epochs=1, max_batches=12)
    trainer = LMTrainer(config, corpus, bigram)
    trainer.train_epoch()
    expected = trainer.evaluate()
    label = "None (only regular dropout)"
    assert float(rows[(f"{label}, test", "1")]["mean"]) == pytest.approx(
        expected["test_ppl"], rel=1e-3
    )
    assert float(rows[("Kneser–Ney bigram, bigram test", "1")]["mean"]) == pytest.approx(
        expected["kn_test_ppl"], rel=1e-3
    )


def test_a_trials_progress_prints_at_most_one_plain_line_per_interval(tmp_path, monkeypatch):
    import io

    import tuning.lm
    from tuning.lm import trial_progress

    data = tmp_path / "data"
    MarkovSource.random(6, seed=5).write_corpus(data, (1500, 300, 300), seed=5)
    corpus = load_corpus(data)
    bigram = estimate_kneser_ney(corpus.train, len(corpus.vocab), corpus.vocab.eos_id)
    config = LMConfig.preset("tiny", method="none", epochs=2, max_batches=45)
    trainer = LMTrainer(config, corpus, bigram)
    out = io.StringIO()
    # As a sweep's trial has it: nothing in an epoch shorter than the interval.
    trainer.train_epoch(progress=trial_progress("IMM", "0", out))
    assert out.getvalue() == ""
    # With an interval of 0 s to wait, the first line only: the next is an hour away.
    monkeypatch.setattr(tuning.lm, "PROGRESS_SECONDS", 0.0)
    progress = trial_progress("IMM", "0", out)
    progress.every = 3600.0
    trainer.train_epoch(progress=progress)
    lines = out.getvalue().splitlines()
    assert trainer.batches_per_epoch == 45  # batch 40 has a progress update too
    assert len(lines) == 1 and lines[0].startswith("IMM seed 0: epoch 2/2 batch 20/45, train ppl ")
    assert ", ETA " in lines[0]
