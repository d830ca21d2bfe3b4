"""The IMM branch of the LSTM LM: history draws, batched histories, state, dropout and
gradients, against hand-made streams, a per-position loop and finite differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from imm_ray.imm import imm_loss
from imm_ray.supervised.lm.histories import HistorySampler
from imm_ray.supervised.lm.imm_branch import history_tokens, sampled_imm_backward
from imm_ray.supervised.lm.model import LSTMLanguageModel

STREAM = np.array([0, 1, 2, 1, 3, 1, 2, 4, 1, 0, 2, 1, 3, 3, 1, 0])


def test_sampler_draws_only_windows_ending_in_the_context_and_uniformly():
    sampler = HistorySampler(STREAM, vocab_size=6, unroll=3)
    # Windows of 3 tokens end at positions 2 … 15; token 1 ends those at 3, 5, 8, 11, 14,
    # token 0 those at 9 and 15 (its position 0 has no window), token 5 none.
    assert sampler.counts.tolist() == [2, 5, 3, 3, 1, 0]
    generator = torch.Generator().manual_seed(0)
    ends = sampler.sample_ends(torch.tensor([1]), 20_000, generator)[0]
    assert set(ends.tolist()) == {3, 5, 8, 11, 14}
    windows = sampler.windows(ends)
    assert (windows[:, -1] == 1).all()
    for end, window in zip(ends[:50].tolist(), windows[:50], strict=True):
        assert window.tolist() == STREAM[end - 2 : end + 1].tolist()
    frequencies = np.bincount(ends.numpy(), minlength=15)[[3, 5, 8, 11, 14]] / 20_000
    # Uniform: each of 5 windows has p = 0.2; 5 standard errors of 20k draws is 0.014.
    assert np.abs(frequencies - 0.2).max() < 0.014
    assert sampler.has_history(torch.tensor([1, 5, 0])).tolist() == [True, False, True]


def test_sampler_rejects_bad_k_and_short_streams():
    sampler = HistorySampler(STREAM, vocab_size=6, unroll=3)
    with pytest.raises(ValueError, match="k must be an integer >= 1, got 0"):
        sampler.sample_ends(torch.tensor([1]), 0)
    with pytest.raises(ValueError, match="at least unroll = 40 tokens"):
        HistorySampler(STREAM, vocab_size=6, unroll=40)


def test_history_of_position_i_is_the_windows_last_i_plus_1_tokens():
    sampler = HistorySampler(STREAM, vocab_size=6, unroll=4)
    ends = torch.tensor([[[7, 12], [5, 9], [14, 8]]])  # [B=1, L=3, k=2]
    tokens, lengths = history_tokens(sampler, ends, steps=3)
    assert lengths[0].tolist() == [[1, 1], [2, 2], [3, 3]]
    for i in range(3):
        for s in range(2):
            end = int(ends[0, i, s])
            assert tokens[0, i, s, : i + 1].tolist() == STREAM[end - i : end + 1].tolist()


def tiny_model(dropout=0.0, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    model = LSTMLanguageModel(6, embed_dim=4, hidden=5, layers=2, dropout=dropout, init_scale=0.5)
    return model.to(dtype)


def batch(dtype=torch.float32):
    inputs = torch.tensor([[1, 2, 3], [0, 1, 1]])
    state = tuple(
        torch.randn(2, 2, 5, generator=torch.Generator().manual_seed(3), dtype=dtype)
        for _ in range(2)
    )
    target = torch.softmax(torch.randn(2, 3, 6, generator=torch.Generator().manual_seed(4)), -1)
    return inputs, state, target.to(dtype)


@torch.no_grad()
def loop_risk(model, inputs, state, target, sampler, ends):
    """The public code's way: every (row, position, sample) run alone from the row's state."""
    rows, steps = inputs.shape
    risks = []
    for b in range(rows):
        for i in range(steps):
            members = []
            for end in ends[b, i].tolist():
                history = torch.as_tensor(STREAM[end - i : end + 1]).unsqueeze(0)
                row_state = (state[0][:, b : b + 1], state[1][:, b : b + 1])
                log_probs, _ = model(history, row_state, dropout=False)
                members.append(log_probs[0, -1])
            risks.append(imm_loss(torch.stack(members)[None], target[b, i][None]))
    return torch.stack(risks).mean()


def test_batched_histories_equal_a_per_position_loop():
    model = tiny_model()
    sampler = HistorySampler(STREAM, vocab_size=6, unroll=3)
    inputs, state, target = batch()
    risk, rows = sampled_imm_backward(
        model, inputs, state, target, sampler, 4, torch.Generator().manual_seed(7)
    )
    ends = sampler.sample_ends(inputs, 4, torch.Generator().manual_seed(7))
    assert rows == 6
    assert risk == pytest.approx(
        float(loop_risk(model, inputs, state, target, sampler, ends)), rel=1e-5
    )


def test_imm_branch_leaves_the_carried_state_and_the_dropout_mode_unchanged():
    model = tiny_model(dropout=0.5)
    model.train()
    sampler = HistorySampler(STREAM, vocab_size=6, unroll=3)
    inputs, state, target = batch()
    before = tuple(s.clone() for s in state)
    risks = [
        sampled_imm_backward(
            model, inputs, state, target, sampler, 3, torch.Generator().manual_seed(1)
        )[0]
        for _ in range(2)
    ]
    assert all(torch.equal(a, b) for a, b in zip(state, before, strict=True))
    assert model.training and all(m.training for m in model.modules())
    # With dropout 0.5 active the two evaluations would differ; the branch runs without it.
    assert risks[0] == risks[1]
    # ... while the primary branch, in training mode, does drop out.
    first, _ = model(inputs, state)
    second, _ = model(inputs, state)
    assert not torch.equal(first, second)


@pytest.mark.parametrize("memory_bounded", [False, True])
def test_imm_gradient_of_a_tiny_lstm_matches_finite_differences(memory_bounded):
    model = tiny_model(dtype=torch.float64)
    sampler = HistorySampler(STREAM, vocab_size=6, unroll=3)
    inputs, state, target = batch(torch.float64)

    def risk() -> float:
        model.zero_grad()
        return sampled_imm_backward(
            model,
            inputs,
            state,
            target,
            sampler,
            3,
            torch.Generator().manual_seed(5),
            memory_bounded,
        )[0]

    risk()
    params = dict(model.named_parameters())
    checked = 0
    for name in ("embedding.weight", "rnns.0.weight_hh_l0", "rnns.1.bias_ih_l0", "decoder.weight"):
        parameter = params[name]
        grad = parameter.grad.clone()
        flat, flat_grad = parameter.data.view(-1), grad.view(-1)
        for index in torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(0))[:4]:
            original = float(flat[index])
            flat[index] = original + 1e-6
            up = risk()
            flat[index] = original - 1e-6
            down = risk()
            flat[index] = original
            assert (up - down) / 2e-6 == pytest.approx(float(flat_grad[index]), abs=1e-7, rel=1e-5)
            checked += 1
    assert checked == 16


def test_positions_without_history_are_left_out():
    model = tiny_model()
    sampler = HistorySampler(STREAM, vocab_size=6, unroll=3)
    inputs = torch.tensor([[5, 5]])
    state = model.init_state(1)
    target = torch.full((1, 2, 6), 1 / 6)
    assert sampled_imm_backward(model, inputs, state, target, sampler, 2) == (0.0, 0)


@pytest.mark.parametrize("memory_bounded", [False, True])
def test_all_histories_go_through_one_batched_call_unless_memory_bounded(memory_bounded):
    """By default the B·L·k histories run in one call of the LSTM; the memory-bounded mode
    runs one sample (B·L histories) at a time, k calls in each of its two passes (without
    and with gradient), to the same risk."""
    model = tiny_model()
    sampler = HistorySampler(STREAM, vocab_size=6, unroll=3)
    inputs, state, target = batch()
    calls = []
    original = model.last_log_probs

    def counted(tokens, lengths, start):
        calls.append(tokens.shape[0])
        return original(tokens, lengths, start)

    model.last_log_probs = counted
    arguments = (model, inputs, state, target, sampler, 4, torch.Generator().manual_seed(7))
    if memory_bounded:
        risk, rows = sampled_imm_backward(*arguments, memory_bounded=True)
    else:
        risk, rows = sampled_imm_backward(*arguments)
    assert calls == ([6] * 8 if memory_bounded else [6 * 4]) and rows == 6
    ends = sampler.sample_ends(inputs, 4, torch.Generator().manual_seed(7))
    expected = float(loop_risk(model, inputs, state, target, sampler, ends))
    assert risk == pytest.approx(expected, rel=1e-5)
