"""The LSTM LM's training step: serialized IMM's corrected target (Algorithm 2) against a
hand computation from the core's Eq. (13) correction, its "mean 1" property in bf16, the
trainer's fused cross-entropy against CE + λ·ĨMM built term by term, the loss convention
(summed over the unroll), bf16 training and the allocator setting."""

from __future__ import annotations

import copy
import dataclasses
import platform
import subprocess
import sys

import pytest
import torch

from imm_ray.imm import serialized_correction, serialized_imm_loss
from imm_ray.restricted.kneser_ney import estimate_kneser_ney
from imm_ray.supervised.lm.corpus import load_corpus
from imm_ray.supervised.lm.histories import HistorySampler
from imm_ray.supervised.lm.imm_branch import (
    SerializedIMM,
    linear_in_log_probs,
    sampled_imm_backward,
)
from imm_ray.supervised.lm.metrics import batchify
from imm_ray.supervised.lm.model import FrozenLinear, LSTMLanguageModel, autocast, native_bf16
from imm_ray.supervised.lm.synthetic import MarkovSource
from imm_ray.supervised.lm.train import EpochTotals, LMConfig, LMTrainer

V = 6


def tiny_model(seed: int = 0) -> LSTMLanguageModel:
    torch.manual_seed(seed)
    return LSTMLanguageModel(V, 4, 5, 2, 0.3, 0.5)


def target_rows(inputs: torch.Tensor) -> torch.Tensor:
    """A made-up P̂(· | x̄): a fixed softmax row per context id."""
    table = torch.softmax(torch.randn(V, V, generator=torch.Generator().manual_seed(9)), -1)
    return table[inputs]


def small_bigram():
    """A Kneser–Ney bigram over the V ids (id 0 as the end of sentence)."""
    stream = torch.randint(1, V, (400,), generator=torch.Generator().manual_seed(5))
    stream[::7] = 0
    return estimate_kneser_ney(stream, V, 0)


@pytest.mark.parametrize("refresh_every", [10, 2])
@pytest.mark.parametrize("target", ["rows", "bigram"])
def test_corrected_target_is_the_stale_ratio_of_eq_13_times_the_bigram(refresh_every, target):
    """Both forms of the target (a rows callable; a KN bigram, whose rows_over_ forms the
    factor), within one snapshot's window and across refreshes (r = 2: the induced model
    restarts, and its table's rows are set again when first seen)."""
    model = tiny_model()
    stream = torch.tensor([[1, 2, 1, 3, 1, 4, 2, 2], [0, 1, 2, 5, 2, 1, 1, 0]])
    state = tuple(
        torch.randn(2, 2, 5, generator=torch.Generator().manual_seed(3)) for _ in range(2)
    )
    bigram = small_bigram()
    given, rows = (target_rows, target_rows) if target == "rows" else (bigram, bigram.rows)
    serialized = SerializedIMM(refresh_every=refresh_every, vocab_size=V)
    for step, inputs in enumerate(stream.split(2, dim=1)):
        weights = serialized.corrected_target_(model, step, inputs, state, given, scale=0.3)
        # By hand: the snapshot's predictions, and its induced model as the mean of its
        # predictions at every position read since the refresh with the same input (this
        # batch's too).
        if step % refresh_every == 0:
            snapshot = copy.deepcopy(model).eval()
            stale_state = state
            seen_probs, seen_inputs = [], []
        with torch.no_grad():
            stale, stale_state = snapshot(inputs, stale_state, dropout=False)
        seen_probs.append(stale.reshape(-1, V).exp())
        seen_inputs.append(inputs.reshape(-1))
        probs, contexts = torch.cat(seen_probs), torch.cat(seen_inputs)
        induced = torch.stack(
            [probs[contexts == x].mean(0) for x in inputs.reshape(-1).tolist()]
        ).log()
        correction = serialized_correction(stale.reshape(-1, V), induced)
        expected = 0.3 * correction * rows(inputs).reshape(-1, V)
        torch.testing.assert_close(weights, expected, rtol=1e-5, atol=1e-7)
        # The model is trained in between: the snapshot must not follow it.
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1)


def test_a_bf16_snapshots_correction_averages_to_one_over_each_contexts_rows():
    model = tiny_model(1)
    inputs = torch.tensor([[1, 2, 1, 3], [1, 1, 2, 0], [3, 1, 2, 2]])
    state = model.init_state(3)
    serialized = SerializedIMM(refresh_every=10, vocab_size=V, precision="bf16")

    def ones(contexts: torch.Tensor) -> torch.Tensor:  # P̂ = 1: the weights are the correction
        return torch.ones(*contexts.shape, V)

    weights = serialized.corrected_target_(model, 0, inputs, state, ones)
    assert serialized.snapshot.module.decoder.weight.dtype == torch.bfloat16
    assert weights.dtype == torch.float32
    flat = inputs.reshape(-1)
    for x in flat.unique().tolist():
        # Σ over x̄'s rows of Q†/Q̂† = its count, for every y, whatever Q†'s rounding.
        torch.testing.assert_close(weights[flat == x].mean(0), torch.ones(V))
    # Not trivially 1: the rows of a context differ.
    assert float(weights[flat == 1].std(0).max()) > 1e-3


@pytest.fixture(scope="module")
def markov(tmp_path_factory):
    folder = tmp_path_factory.mktemp("markov")
    MarkovSource.random(7, seed=2).write_corpus(folder, (1500, 200, 200), seed=2)
    corpus = load_corpus(folder)
    return corpus, estimate_kneser_ney(corpus.train, len(corpus.vocab), corpus.vocab.eos_id)


def test_the_trainers_fused_step_is_ce_plus_lambda_times_serialized_imm(markov):
    corpus, bigram = markov
    config = LMConfig.preset(
        "tiny", method="serialized", lam=0.4, lr=0.1, clip=1e6, refresh_every=3, max_batches=5
    )
    trainer = LMTrainer(config, corpus, bigram)
    # The same model trained by hand: CE + λ·ĨMM from the core's functions, term by term.
    model = copy.deepcopy(trainer.model)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr)
    data = batchify(corpus.train, config.batch_size)
    totals = EpochTotals()
    steps = trainer.epoch_steps(totals)
    state = stale_state = model.init_state(config.batch_size)
    snapshot = None
    v = len(corpus.vocab)
    sums, counts = torch.zeros(v, v), torch.zeros(v)
    imm_values = []
    for step in range(5):
        inputs = data[:, step * config.unroll : (step + 1) * config.unroll]
        targets = data[:, step * config.unroll + 1 : (step + 1) * config.unroll + 1]
        if step % config.refresh_every == 0:
            snapshot = copy.deepcopy(model).eval()
            stale_state = state
            sums, counts = torch.zeros(v, v), torch.zeros(v)
        log_probs, new_state = model(inputs, state)
        with torch.no_grad():
            stale, stale_state = snapshot(inputs, stale_state, dropout=False)
        flat = inputs.reshape(-1)
        sums.index_add_(0, flat, stale.reshape(-1, v).exp())
        counts.index_add_(0, flat, torch.ones(len(flat)))
        correction = serialized_correction(
            stale.reshape(-1, v), (sums[flat] / counts[flat, None]).log()
        )
        nll = -log_probs.gather(-1, targets.unsqueeze(-1)).mean()
        extra = serialized_imm_loss(
            log_probs.reshape(-1, v), bigram.rows(inputs).reshape(-1, v), correction
        )
        imm_values.append(float(extra.detach()))
        optimizer.zero_grad()
        # Summed over the unroll steps, averaged over rows (the trainer's convention).
        ((nll + config.lam * extra) * inputs.shape[1]).backward()
        optimizer.step()
        state = tuple(s.detach() for s in new_state)
        next(steps)  # the trainer's step (the tiny preset has no dropout)
        for mine, theirs in zip(model.parameters(), trainer.model.parameters(), strict=True):
            torch.testing.assert_close(theirs, mine, rtol=1e-4, atol=1e-6)
    assert totals.imm / totals.imm_rows == pytest.approx(sum(imm_values) / 5, rel=1e-4)


def test_bf16_training_runs_and_keeps_float32_log_probs(markov):
    corpus, bigram = markov
    config = LMConfig.preset("tiny", method="imm", precision="bf16", max_batches=4)
    trainer = LMTrainer(config, corpus, bigram)
    metrics = trainer.train_epoch()
    assert torch.isfinite(torch.tensor([metrics["train_ppl"], metrics["imm_risk"]])).all()
    with autocast("cpu", "bf16"):
        log_probs, state = trainer.model(torch.tensor([[1, 2]]), trainer.model.init_state(1))
    assert log_probs.dtype == torch.float32 and state[0].dtype == torch.float32
    auto = LMTrainer(dataclasses.replace(config, method="serialized"), corpus, bigram)
    assert auto.snapshot_precision == ("bf16" if native_bf16("cpu") else "fp32")


def test_freed_large_blocks_stay_in_the_process_for_reuse():
    # In a fresh interpreter: the thresholds are process-wide.
    script = """
import sys
from imm_ray._memory import reuse_freed_memory

def resident():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

before = resident()
block = bytearray(16 * 1024 * 1024)  # touched: bytearray zero-fills
del block
returned = resident() - before < 8 * 1024 * 1024
ok = reuse_freed_memory()
before = resident()
block = bytearray(16 * 1024 * 1024)
del block
kept = resident() - before > 12 * 1024 * 1024
print(returned, ok, kept)
"""
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc's mallopt")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True", "True"]


@pytest.mark.parametrize("method", ["none", "imm"])
def test_a_step_sums_the_losses_over_the_unroll_and_averages_over_rows(markov, method):
    """SGD lr 1 means the paper's step only with Zaremba's convention: the cross-entropy (and
    the IMM risk) summed over the unroll steps and averaged over the batch rows."""
    corpus, bigram = markov
    config = LMConfig.preset("tiny", method=method, lam=0.3, lr=0.5, clip=1e6, max_batches=1)
    trainer = LMTrainer(config, corpus, bigram)
    model = copy.deepcopy(trainer.model)
    data = batchify(corpus.train, config.batch_size)
    inputs, targets = data[:, : config.unroll], data[:, 1 : config.unroll + 1]
    state = model.init_state(config.batch_size)
    log_probs, _ = model(inputs, state)
    mean_ce = -log_probs.gather(-1, targets.unsqueeze(-1)).mean()
    main = torch.autograd.grad(mean_ce, list(model.parameters()))
    expected = [
        p - config.lr * config.unroll * g for p, g in zip(model.parameters(), main, strict=True)
    ]
    if method == "imm":
        model.zero_grad()
        sampler = HistorySampler(corpus.train, len(corpus.vocab), config.unroll)
        generator = torch.Generator().manual_seed(config.seed)  # the trainer's, unused so far
        sampled_imm_backward(
            model, inputs, state, bigram.rows(inputs), sampler, config.k, generator
        )
        expected = [
            e - config.lr * config.lam * config.unroll * p.grad
            for e, p in zip(expected, model.parameters(), strict=True)
        ]
    trainer.train_epoch(validate=False)
    for theirs, mine in zip(trainer.model.parameters(), expected, strict=True):
        torch.testing.assert_close(theirs, mine, rtol=1e-4, atol=1e-6)


def test_linear_in_log_probs_hands_its_gradient_to_autograd_as_it_is():
    logits = torch.randn(3, 2, V, generator=torch.Generator().manual_seed(4), requires_grad=True)
    weights = torch.rand(6, V, generator=torch.Generator().manual_seed(5))
    soft_ce = -(weights.view(3, 2, V) * torch.log_softmax(logits, -1)).sum() / 3
    expected_grad = torch.autograd.grad(soft_ce, logits)[0]
    gradient = -weights / 3  # the soft-target cross-entropy's gradient in the log-probs
    log_probs = torch.log_softmax(logits, -1)
    seen = []
    log_probs.register_hook(seen.append)
    loss = linear_in_log_probs(log_probs, gradient)
    torch.testing.assert_close(loss, soft_ce)
    loss.backward()
    torch.testing.assert_close(logits.grad, expected_grad)
    # Back-propagated with 1, the log-probs' gradient is the caller's buffer itself.
    assert seen[0].data_ptr() == gradient.data_ptr()
    # With another factor it is scaled, and the buffer is left as it was.
    logits.grad = None
    (linear_in_log_probs(torch.log_softmax(logits, -1), gradient) * 2.0).backward()
    torch.testing.assert_close(logits.grad, 2.0 * expected_grad)
    torch.testing.assert_close(gradient, -weights / 3)
    with pytest.raises(ValueError, match="gradient must have as many numbers"):
        linear_in_log_probs(torch.zeros(2, V), torch.zeros(3, V))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_a_frozen_linear_is_the_linear_it_copies(dtype):
    linear = torch.nn.Linear(7, 30).to(dtype)
    frozen = FrozenLinear(linear, rows_hint=12)
    # Packed for oneDNN on x86 builds that have it (float32, bf16); float64 is not packed.
    if dtype == torch.float64:
        assert frozen.packed is None
    elif torch.backends.mkldnn.is_available() and platform.machine() in ("x86_64", "AMD64"):
        assert frozen.packed is not None
    for rows in (1, 12, 50):
        x = torch.randn(rows, 7, generator=torch.Generator().manual_seed(rows)).to(dtype)
        with torch.no_grad():
            torch.testing.assert_close(frozen(x), linear(x))
    # A copy: training the original afterwards does not move it.
    with torch.no_grad():
        linear.weight.add_(1.0)
    x = torch.ones(3, 7, dtype=dtype)
    assert not torch.allclose(frozen(x).float(), linear(x).detach().float())


def test_the_snapshots_decoder_is_frozen_and_packed():
    model = tiny_model()
    serialized = SerializedIMM(refresh_every=10, vocab_size=V)
    inputs = torch.tensor([[1, 2, 3]])
    serialized.corrected_target_(model, 0, inputs, model.init_state(1), target_rows)
    decoder = serialized.snapshot.module.decoder
    assert isinstance(decoder, FrozenLinear)
    torch.testing.assert_close(decoder.weight, model.decoder.weight.detach())


def test_the_induced_pool_is_kept_across_refreshes_and_follows_the_models_dtype():
    """A refresh forgets the pool's slots but keeps its memory; a model in another dtype
    (here float64) gets a pool, weights and arithmetic in that dtype."""
    model = tiny_model(2)
    state = model.init_state(2)
    inputs = torch.tensor([[1, 2, 1], [3, 1, 2]])
    serialized = SerializedIMM(refresh_every=2, vocab_size=V)
    serialized.corrected_target_(model, 0, inputs, state, target_rows)
    pool = serialized.sums
    serialized.corrected_target_(model, 1, inputs[:, :1], state, target_rows)
    serialized.corrected_target_(model, 2, inputs[:, 2:], state, target_rows)  # a refresh
    assert serialized.sums is pool and serialized.used == 2  # only this batch's 1 and 2
    model.double()
    state64 = tuple(s.double() for s in state)
    weights = serialized.corrected_target_(model, 4, inputs, state64, target_rows, scale=0.5)
    assert serialized.sums.dtype == serialized.counts.dtype == weights.dtype == torch.float64
    # By hand, in float64: right after a refresh Q̂† is the mean of this batch's Q† rows
    # with the same input.
    with torch.no_grad():
        stale, _ = copy.deepcopy(model).eval()(inputs, state64, dropout=False)
    stale, flat = stale.reshape(-1, V).exp(), inputs.reshape(-1)
    induced = torch.stack([stale[flat == x].mean(0) for x in flat.tolist()])
    expected = 0.5 * stale / induced * target_rows(flat).double()
    torch.testing.assert_close(weights, expected, rtol=1e-12, atol=1e-15)


def test_an_unknown_precision_is_refused_by_name():
    with pytest.raises(ValueError, match="^precision must be one of fp32, bf16"):
        SerializedIMM(refresh_every=2, vocab_size=V, precision="fp16")
