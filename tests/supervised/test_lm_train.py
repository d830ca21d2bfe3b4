"""The LSTM LM trainer: its configuration errors, KN noising, the perplexities and the
induced bigram against exact computations, and checkpoint/resume."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from gpu_checkpoints import saved_as_on_cuda

from imm_ray.restricted.kneser_ney import estimate_kneser_ney
from imm_ray.supervised.lm.corpus import load_corpus
from imm_ray.supervised.lm.metrics import bigram_perplexity, induced_bigram, perplexity
from imm_ray.supervised.lm.model import LSTMLanguageModel
from imm_ray.supervised.lm.noising import KneserNeyNoiser
from imm_ray.supervised.lm.synthetic import MarkovSource
from imm_ray.supervised.lm.train import CHECKPOINT_FILE, LMConfig, LMTrainer, check_bigram


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("markov")
    MarkovSource.random(7, seed=1).write_corpus(folder, (3000, 500, 500), seed=1)
    return load_corpus(folder)


@pytest.fixture(scope="module")
def bigram(corpus):
    return estimate_kneser_ney(corpus.train, len(corpus.vocab), corpus.vocab.eos_id)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("k", 0, "k must be an integer >= 1, got 0"),
        ("every", 0, "every must be an integer >= 1, got 0"),
        ("lam", -0.1, "lam must be a finite number >= 0, got -0.1"),
        ("unroll", 1, "unroll must be an integer >= 2, got 1"),
        ("method", "kd", "method must be one of none, noising, imm, serialized, got 'kd'"),
        ("dropout", 1.0, r"dropout must be a number in \[0, 1\), got 1.0"),
        ("gamma0", 2, r"gamma0 must be a number in \[0, 1\], got 2"),
        ("max_batches", 0, "max_batches must be an integer >= 1 or None, got 0"),
        ("precision", "fp16", "precision must be one of fp32, bf16, got 'fp16'"),
        ("snapshot_precision", "half", "snapshot_precision must be one of auto, fp32, bf16"),
    ],
)
def test_bad_configuration_names_the_field_and_the_range(field, value, message):
    with pytest.raises(ValueError, match=message):
        LMConfig.preset("tiny", **{field: value})


def test_unknown_preset_and_field_are_refused():
    with pytest.raises(ValueError, match="preset must be one of paper, small, tiny, got 'big'"):
        LMConfig.preset("big")
    with pytest.raises(ValueError, match="unknown LMConfig fields: sizes"):
        LMConfig.preset("tiny", sizes=3)


def test_paper_preset_is_the_papers_model():
    paper = LMConfig.preset("paper")
    assert (paper.layers, paper.hidden, paper.dropout, paper.unroll, paper.batch_size) == (
        2,
        1500,
        0.65,
        35,
        20,
    )
    assert (paper.lr, paper.lr_decay, paper.clip, paper.lam, paper.k, paper.every) == (
        1.0,
        0.5,
        5.0,
        0.2,
        10,
        5,
    )


def test_a_bigram_over_another_vocabulary_is_refused(corpus):
    other = estimate_kneser_ney(np.array([1, 2, 0, 3, 0]), 4, 0)
    with pytest.raises(ValueError, match=r"the bigram's vocabulary \(4 ids.*differs"):
        check_bigram(other, corpus)


def test_noising_gamma_and_q_are_the_kneser_ney_quantities():
    # Contexts: 0 → {1, 2}; 1 → {2, 0, 2}; 2 → {1, 0, 0} (the stream starts after <eos> = 0).
    stream = np.array([1, 2, 1, 0, 2, 0, 1, 2, 0])
    noiser = KneserNeyNoiser(stream, vocab_size=3, eos_id=0, gamma0=0.5)
    # γ(x) = γ0 · N1+(x, ·) / c(x): x = 0 follows 3 times (0→1 twice, 0→2), etc.
    previous = np.concatenate([[0], stream[:-1]])
    for x in range(3):
        followers = len(set(stream[previous == x]))
        assert float(noiser.gamma[x]) == pytest.approx(0.5 * followers / (previous == x).sum())
    # q(y) ∝ N1+(·, y): distinct left contexts of y.
    left = [len(set(previous[stream == y])) for y in range(3)]
    assert noiser.q.tolist() == pytest.approx([n / sum(left) for n in left])


def test_noising_replaces_tokens_at_rate_gamma_with_draws_from_q():
    stream = np.array([1, 2, 1, 0, 2, 0, 1, 2, 0])
    noiser = KneserNeyNoiser(stream, vocab_size=3, eos_id=0, gamma0=1.0)
    rows = torch.tensor([[1, 0] * 10_000])
    noised = noiser.noise(rows, torch.Generator().manual_seed(0))
    assert torch.equal(noised[:, 0], rows[:, 0])
    # After a 1 the next token is replaced with probability γ(1); the draw is y w.p. q(y).
    after_one = noised[0, 1::2]
    kept = float((after_one == 0).float().mean())
    gamma, q0 = float(noiser.gamma[1]), float(noiser.q[0])
    assert kept == pytest.approx(1 - gamma + gamma * q0, abs=0.015)


def test_perplexity_and_induced_bigram_match_a_token_by_token_computation(corpus):
    torch.manual_seed(0)
    model = LSTMLanguageModel(len(corpus.vocab), 8, 8, 1, 0.0, 0.3)
    eos = corpus.vocab.eos_id
    stream = torch.as_tensor(np.concatenate([[eos], corpus.train]))
    v = len(corpus.vocab)
    sums, counts = torch.zeros(v, v, dtype=torch.float64), torch.zeros(v)
    state, nll = model.init_state(1), 0.0
    with torch.no_grad():
        for t in range(len(stream) - 1):
            log_probs, state = model(stream[t : t + 1].view(1, 1), state, dropout=False)
            sums[stream[t]] += log_probs[0, 0].exp().double()
            counts[stream[t]] += 1
            nll -= float(log_probs[0, 0, stream[t + 1]])
    # <unk> never occurs in this corpus: its row is the mean prediction over all positions.
    unseen = counts == 0
    assert unseen.sum() == 1
    sums[unseen], counts[unseen] = sums.sum(0) / counts.sum(), 1.0
    exact = sums / counts[:, None]
    measured = induced_bigram(model, corpus.train, eos, rows=1, unroll=7)
    assert torch.allclose(measured.double(), exact, atol=1e-5)
    assert perplexity(model, corpus.train, eos, rows=1, unroll=7) == pytest.approx(
        math.exp(nll / (len(stream) - 1)), rel=1e-5
    )
    ids = corpus.valid
    previous = np.concatenate([[eos], ids[:-1]])
    by_hand = math.exp(-np.mean(np.log(exact.numpy()[previous, ids])))
    assert bigram_perplexity(measured, ids, eos) == pytest.approx(by_hand, rel=1e-4)


def test_trained_models_induced_bigram_matches_the_exact_one_of_its_windows(tmp_path):
    """On a Markov source, the induced bigram of a model that reads windows of m tokens is
    known exactly (MarkovSource.induced_bigram); measuring it over a long sample matches."""
    source = MarkovSource.random(4, seed=2)
    source.write_corpus(tmp_path, (6000, 20_000, 300), seed=2)
    corpus = load_corpus(tmp_path)
    bigram = estimate_kneser_ney(corpus.train, len(corpus.vocab), corpus.vocab.eos_id)
    config = LMConfig.preset("tiny", method="imm", epochs=2)
    trainer = LMTrainer(config, corpus, bigram)
    for _ in range(2):
        trainer.train_epoch()
    model = trainer.model
    # Source symbols → corpus ids (the corpus orders its vocabulary by count, adds <unk>).
    to_corpus = np.array([corpus.vocab.id(w) for w in source.words])
    m = 3

    @torch.no_grad()
    def predictor(windows: np.ndarray) -> np.ndarray:
        tokens = torch.as_tensor(to_corpus[windows])
        log_probs, _ = model(tokens, model.init_state(len(tokens)), dropout=False)
        return log_probs[:, -1].exp().numpy()[:, to_corpus]

    exact = source.induced_bigram(predictor, window=m)
    windows = np.lib.stride_tricks.sliding_window_view(source.sample(200_000, seed=9), m)
    measured = np.zeros((4, 4))
    np.add.at(measured, windows[:, -1], predictor(windows))
    measured /= np.bincount(windows[:, -1], minlength=4)[:, None]
    assert np.abs(measured - exact).max() < 0.01
    # The model learned something: its induced bigram is closer to the truth than uniform.
    truth = source.true_bigram()
    assert np.abs(exact - truth).sum() < np.abs(1 / 5 - truth).sum()


@pytest.mark.parametrize("method", ["imm", "noising", "serialized"])
def test_resuming_a_checkpoint_gives_the_weights_of_uninterrupted_training(
    corpus, bigram, tmp_path, method
):
    config = LMConfig.preset("tiny", method=method, epochs=2, max_batches=30, dropout=0.3)
    straight = LMTrainer(config, corpus, bigram)
    straight.train_epoch()
    straight.train_epoch()

    first = LMTrainer(config, corpus, bigram)
    first.train_epoch()
    first.save(tmp_path)
    torch.manual_seed(123)  # whatever happens to the global RNG in between
    resumed = LMTrainer(config, corpus, bigram)
    resumed.restore(tmp_path)
    resumed.train_epoch()
    for a, b in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(straight.history, resumed.history, strict=True):
        assert (a["train_ppl"], a["valid_ppl"], a["lr"]) == (
            b["train_ppl"],
            b["valid_ppl"],
            b["lr"],
        )
    assert resumed.epoch == 2
    assert not list(tmp_path.glob("*.tmp"))

    longer = LMTrainer(dataclasses.replace(config, epochs=3), corpus, bigram)
    longer.restore(tmp_path)  # more epochs continue the same run
    assert longer.epoch == 1
    other = LMTrainer(dataclasses.replace(config, lam=0.5), corpus, bigram)
    with pytest.raises(ValueError, match=r"another configuration \(differs in lam\)"):
        other.restore(tmp_path)


def test_a_checkpoint_taken_on_a_gpu_resumes_on_a_cpu_as_if_never_interrupted(
    corpus, bigram, tmp_path
):
    config = LMConfig.preset("tiny", method="imm", epochs=2, max_batches=30, dropout=0.3)
    straight = LMTrainer(config, corpus, bigram)
    straight.train_epoch()
    straight.train_epoch()

    first = LMTrainer(config, corpus, bigram)
    first.train_epoch()
    state = first.state_dict()
    state["config"]["device"] = "cuda"
    with saved_as_on_cuda():
        torch.save(state, tmp_path / CHECKPOINT_FILE)
    with pytest.raises(RuntimeError, match="CUDA"):  # as a GPU run's file: its storages
        torch.load(tmp_path / CHECKPOINT_FILE, weights_only=False)
    resumed = LMTrainer(config, corpus, bigram)
    resumed.restore(tmp_path)
    resumed.train_epoch()
    for a, b in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert [h["valid_ppl"] for h in resumed.history] == [h["valid_ppl"] for h in straight.history]
    assert resumed.config.device == "cpu"


def test_imm_starts_once_validation_perplexity_is_below_the_threshold(corpus, bigram):
    config = LMConfig.preset("tiny", method="imm", imm_start_ppl=1e6, max_batches=5)
    trainer = LMTrainer(config, corpus, bigram)
    assert not trainer.imm_active
    metrics = trainer.train_epoch()
    assert math.isnan(metrics["imm_risk"]) and metrics["imm_started"] == 1.0
    assert trainer.imm_active
    assert not math.isnan(trainer.train_epoch()["imm_risk"])


def test_train_lm_shows_batches_and_epochs_as_plain_lines_where_not_a_terminal(corpus, bigram):
    import io
    import re

    from imm_ray.progress import Progress
    from imm_ray.supervised.lm.train import train_lm

    out = io.StringIO()
    config = LMConfig.preset("tiny", method="none", epochs=2, max_batches=40)
    train_lm(config, corpus, bigram, progress=Progress(out, every=0.0))
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()
    batch = r"epoch {e}/2 batch {b}/40, train ppl [\d.]+, \d+ s"
    assert re.fullmatch(batch.format(e=1, b=20) + r", ETA \d+ s", lines[0]), lines
    assert re.fullmatch(batch.format(e=1, b=40), lines[1]), lines  # done: no ETA
    assert re.fullmatch(r"epoch 1/2: train ppl [\d.]+, valid ppl [\d.]+, \d+ s", lines[2])
    assert [line.split(",")[0] for line in lines[3:]] == [
        "epoch 2/2 batch 20/40",
        "epoch 2/2 batch 40/40",
        "epoch 2/2: train ppl " + lines[5].split("train ppl ")[1].split(",")[0],
    ]
