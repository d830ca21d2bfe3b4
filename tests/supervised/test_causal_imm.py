"""Sampled IMM for a causal Hugging Face LM: the window pool, the pooled induced model and
the risk and its gradient against a hand computation that runs every history on its own,
on a 2-layer, 16-wide GPT-2 config."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from imm_ray.restricted.kneser_ney import estimate_kneser_ney
from imm_ray.supervised.hf_lm.causal_imm import (
    WindowPool,
    causal_imm_risk,
    pooled_induced_log_probs,
)

VOCAB = 7
EOS = 6
STREAM = np.array([0, 1, 2, 6, 1, 3, 1, 2, 6, 4, 1, 0, 2, 6, 1, 3, 3, 5, 6, 0, 2, 1, 6])


def tiny_gpt2(seed: int = 0, dropout: float = 0.3) -> GPT2LMHeadModel:
    """A 2-layer, 16-wide GPT-2 over :data:`VOCAB` ids, ``dropout`` in its residual paths."""
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=VOCAB,
        n_positions=16,
        n_embd=16,
        n_layer=2,
        n_head=2,
        resid_pdrop=dropout,
        embd_pdrop=0.0 if dropout == 0 else 0.1,
        attn_pdrop=0.0 if dropout == 0 else 0.1,
        bos_token_id=EOS,
        eos_token_id=EOS,
    )
    return GPT2LMHeadModel(config)


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=16,
        attention_dropout=0.3,
        bos_token_id=EOS,
        eos_token_id=EOS,
        pad_token_id=EOS,
    )
    return LlamaForCausalLM(config)


def test_the_pool_draws_windows_of_the_stream_at_uniform_offsets():
    pool = WindowPool(STREAM, VOCAB)
    generator = torch.Generator().manual_seed(0)
    windows = pool.sample(20_000, 5, generator)
    starts = []
    for window in windows[:200]:
        matches = [
            s for s in range(len(STREAM) - 4) if STREAM[s : s + 5].tolist() == window.tolist()
        ]
        assert matches, window
        starts.append(matches[0])
    # Uniform over the 19 offsets: the first token's frequencies follow the stream's.
    first = np.bincount(windows[:, 0].numpy(), minlength=VOCAB) / 20_000
    expected = np.bincount(STREAM[: len(STREAM) - 4], minlength=VOCAB) / (len(STREAM) - 4)
    assert np.abs(first - expected).max() < 0.015
    with pytest.raises(ValueError, match="length must be at most the stream's 23 tokens"):
        pool.sample(1, 24)
    with pytest.raises(ValueError, match=r"ids in \[0, 7\)"):
        WindowPool(np.array([0, 7]), VOCAB)


def test_pooled_induced_log_probs_is_the_log_of_each_contexts_mean_probability():
    torch.manual_seed(0)
    log_probs = torch.log_softmax(torch.randn(6, 4) * 30, dim=-1)  # far apart: stability
    groups = torch.tensor([1, 0, 1, 2, 1, 0])
    got = pooled_induced_log_probs(log_probs, groups, 3)
    for context in range(3):
        members = log_probs[groups == context].double()
        want = torch.logsumexp(members, dim=0) - np.log(len(members))
        assert torch.allclose(got[context].double(), want, atol=1e-5)
    with pytest.raises(ValueError, match="every context needs at least one member"):
        pooled_induced_log_probs(log_probs, groups, 4)


@pytest.mark.parametrize("make", [tiny_gpt2, tiny_llama])
def test_the_causal_risk_and_gradient_are_the_hand_computed_ones(make):
    """Every history run on its own (its prefix of one of its row's windows, as a separate
    input), the members of a context averaged as probabilities, −Σ P̂ log Q̂ for every
    position: the sum and every parameter's gradient agree (a 2-layer, 16-wide GPT-2 and
    Llama)."""
    model = make()
    model.train()  # the branch runs without dropout, whatever the model's mode
    bigram = estimate_kneser_ney(STREAM, VOCAB, EOS)
    batch = torch.tensor([[1, 2, 6, 0], [3, 1, 1, 4]])
    # Hand-picked histories, two windows per row. Row 0's hold its contexts 1, 2, 6 and 0;
    # row 1's hold 3 and 1 but not 4, whose position is left out (though row 0's hold no
    # 4 either: rows do not share windows).
    windows = torch.tensor([[[0, 1, 2, 6, 1], [3, 3, 5, 6, 0]], [[1, 3, 1, 2, 6], [0, 2, 1, 6, 0]]])
    result = causal_imm_risk(model, batch, windows, bigram)
    assert model.training
    assert (result.positions, result.covered, result.members) == (8, 7, 11)

    params = [p for p in model.parameters() if p.requires_grad]
    got = torch.autograd.grad(result.total, params)

    model.eval()
    total = 0.0
    for row, own in zip(batch, windows, strict=True):
        for context in row.tolist():
            members = []
            for window in own:
                for p in range(len(window)):
                    if int(window[p]) == context:
                        alone = model(input_ids=window[: p + 1].unsqueeze(0)).logits[0, -1]
                        members.append(torch.softmax(alone, dim=-1))
            if not members:
                continue
            induced = torch.stack(members).mean(dim=0)
            target = bigram.rows(torch.tensor([context]))[0]
            total = total - (target * torch.log(induced)).sum()
    want = torch.autograd.grad(total, params)
    assert float(result.total.detach()) == pytest.approx(float(total.detach()), rel=1e-5)
    assert float(result.risk.detach()) == pytest.approx(float(total.detach()) / 7, rel=1e-5)
    for g, w in zip(got, want, strict=True):
        assert torch.allclose(g, w, atol=1e-6, rtol=1e-4)


def test_a_rows_term_depends_on_that_row_and_its_windows_only():
    """The risk of a batch is the sum of its rows' risks, each row alone."""
    model = tiny_gpt2()
    bigram = estimate_kneser_ney(STREAM, VOCAB, EOS)
    generator = torch.Generator().manual_seed(1)
    batch = WindowPool(STREAM, VOCAB).sample(4, 6, generator)
    windows = WindowPool(STREAM, VOCAB).sample(12, 6, generator).view(4, 3, 6)
    whole = causal_imm_risk(model, batch, windows, bigram)
    parts = [causal_imm_risk(model, batch[i : i + 1], windows[i : i + 1], bigram) for i in range(4)]
    assert whole.covered == sum(part.covered for part in parts if part is not None)
    total = sum(float(part.total.detach()) for part in parts if part is not None)
    assert float(whole.total.detach()) == pytest.approx(total, rel=1e-5)
    with pytest.raises(ValueError, match=r"windows must be \[4, k, W\]"):
        causal_imm_risk(model, batch, windows[0], bigram)


def test_a_batch_none_of_whose_contexts_the_windows_hold_has_no_risk():
    model = tiny_gpt2()
    bigram = estimate_kneser_ney(STREAM, VOCAB, EOS)
    assert (
        causal_imm_risk(model, torch.tensor([[4, 4]]), torch.tensor([[[0, 1, 2]]]), bigram) is None
    )
    # Padding (attention mask 0) is not scored.
    result = causal_imm_risk(
        model,
        torch.tensor([[1, 4]]),
        torch.tensor([[[0, 1, 2]]]),
        bigram,
        attention_mask=torch.tensor([[1, 0]]),
    )
    assert (result.positions, result.covered) == (1, 1)


def test_serialized_imms_corrected_target_is_eq_13_term_by_term():
    """Q† is the model as it was at the refresh, Q̂†(· | x̄) the mean of Q† over every
    position with input x̄ since then (this batch included), and the target at each
    position Q†(· | x_t) / Q̂†(· | x̄_t) · P̂(· | x̄_t), every term computed on its own."""
    from imm_ray.supervised.hf_lm.serialized import CausalSerializedIMM

    model = tiny_gpt2()
    bigram = estimate_kneser_ney(STREAM, VOCAB, EOS)
    serialized = CausalSerializedIMM(refresh_every=3, vocab_size=VOCAB)
    batches = [torch.tensor([[1, 2, 6, 1], [3, 1, 0, 2]]), torch.tensor([[2, 1, 1, 4]])]
    frozen = tiny_gpt2()
    frozen.load_state_dict(model.state_dict())
    frozen.eval()
    seen: list[tuple[int, torch.Tensor]] = []  # (x̄, Q†(· | x_t)) of every position so far
    for step, batch in enumerate(batches):
        got = serialized.causal_target_(model, step, batch, bigram, scale=0.5)
        with torch.no_grad():
            for param in model.parameters():  # the model moves on; Q† stays as it was
                param.add_(0.1)
            stale = []
            for row in batch:
                for p in range(len(row)):
                    logits = frozen(input_ids=row[: p + 1].unsqueeze(0)).logits[0, -1]
                    stale.append((int(row[p]), torch.softmax(logits.double(), dim=-1)))
        seen += stale
        want = []
        for context, q in stale:
            induced = torch.stack([s for c, s in seen if c == context]).mean(dim=0)
            target = bigram.rows(torch.tensor([context]))[0].double()
            want.append(0.5 * q / induced * target)
        assert torch.allclose(got.double(), torch.stack(want), rtol=1e-4, atol=1e-7)
    # At step 3 the snapshot is the model as it is now, and Q̂† starts again.
    got = serialized.causal_target_(model, 3, batches[1], bigram)
    with torch.no_grad():
        logits = model.eval()(input_ids=batches[1]).logits[0]  # Q† runs without dropout
    q = torch.softmax(logits.double(), dim=-1)
    # The two positions with input 1 share Q̂†; the others are alone in theirs.
    induced = torch.stack([q[0], (q[1] + q[2]) / 2, (q[1] + q[2]) / 2, q[3]])
    target = bigram.rows(batches[1][0]).double()
    assert torch.allclose(got.double(), q / induced * target, rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="the model predicts 7 ids and the bigram 9"):
        CausalSerializedIMM(1, 9).causal_target_(model, 0, batches[1], bigram)


def test_serialized_imms_target_on_kept_positions_reads_those_positions_only(monkeypatch):
    """With a mask (padding, or the positions drawn to carry the term) Q̂† is the mean of
    Q† over the kept positions only and the targets are theirs, in row-major order; the
    snapshot's head reads only them (logits_to_keep), and a model without that argument
    (its full logits, then the kept rows) gives the same targets."""
    from imm_ray.supervised.hf_lm.serialized import CausalSerializedIMM

    model = tiny_gpt2()
    bigram = estimate_kneser_ney(STREAM, VOCAB, EOS)
    batch = torch.tensor([[1, 2, 6, 1], [3, 1, 0, 2]])
    keep = torch.tensor([[True, False, True, True], [False, True, False, True]])
    serialized = CausalSerializedIMM(50, VOCAB)
    got = serialized.causal_target_(model, 0, batch, bigram, attention_mask=keep)
    assert serialized.keeps_logits
    with torch.no_grad():
        q = torch.softmax(model.eval()(input_ids=batch).logits.double(), dim=-1)[keep]
    contexts = batch[keep]  # 1, 6, 1, 1, 2
    induced = torch.stack([q[contexts == c].mean(dim=0) for c in contexts.tolist()])
    want = q / induced * bigram.rows(contexts).double()
    assert torch.allclose(got.double(), want, rtol=1e-4, atol=1e-7)
    monkeypatch.setattr(CausalSerializedIMM, "keeps_logits", property(lambda self: False))
    again = CausalSerializedIMM(50, VOCAB).causal_target_(
        model, 0, batch, bigram, attention_mask=keep
    )
    assert torch.allclose(again, got, rtol=1e-5, atol=1e-8)


def test_serialized_imms_snapshot_reads_through_a_packed_head_and_in_bf16_when_asked():
    """The snapshot's vocabulary head is packed once per refresh (the model's own head, tied
    to its embeddings, untouched), and a bf16 snapshot gives the fp32 one's targets to
    bfloat16's precision."""
    from imm_ray.supervised.hf_lm.serialized import CausalSerializedIMM
    from imm_ray.supervised.lm.model import FrozenLinear

    model = tiny_gpt2()
    bigram = estimate_kneser_ney(STREAM, VOCAB, EOS)
    batch = torch.tensor([[1, 2, 6, 1], [3, 1, 0, 2]])
    targets = {}
    for precision in ("fp32", "bf16"):
        serialized = CausalSerializedIMM(50, VOCAB, precision)
        targets[precision] = serialized.causal_target_(model, 0, batch, bigram)
        snapshot = serialized.snapshot.module
        assert isinstance(snapshot.get_output_embeddings(), FrozenLinear)
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        assert snapshot.get_output_embeddings().weight.dtype == dtype
    head = model.get_output_embeddings()
    assert type(head) is torch.nn.Linear and head.weight.dtype == torch.float32
    assert head.weight is model.get_input_embeddings().weight  # still tied
    assert torch.allclose(targets["bf16"], targets["fp32"], rtol=5e-2, atol=1e-3)
    assert not torch.equal(targets["bf16"], targets["fp32"])
