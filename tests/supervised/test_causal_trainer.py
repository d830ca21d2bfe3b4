"""IMMTrainer: each method's loss against a hand computation on a hand-made batch, the
same step through gradient accumulation 1 × 8 and 4 × 2, and bad input refused."""

from __future__ import annotations

import numpy as np
import pytest
import test_causal_imm as causal_imm
import torch
from transformers import (
    BertConfig,
    BertForMaskedLM,
    GPT2Config,
    GPT2LMHeadModel,
    GPT2Model,
    TrainingArguments,
)

from imm_ray.checks import ConfigError
from imm_ray.restricted.kneser_ney import estimate_kneser_ney
from imm_ray.supervised.hf_lm.causal_imm import WindowPool, causal_imm_risk
from imm_ray.supervised.hf_lm.config import CausalIMMConfig
from imm_ray.supervised.hf_lm.serialized import CausalSerializedIMM
from imm_ray.supervised.hf_lm.trainer import IMMTrainer
from imm_ray.supervised.lm.noising import KneserNeyNoiser

VOCAB, EOS = causal_imm.VOCAB, causal_imm.EOS
STREAM = np.array([0, 1, 2, 6, 1, 3, 1, 2, 6, 4, 1, 0, 2, 6, 1, 3, 3, 5, 6, 0, 2, 1, 6] * 3)
LENGTH = 6


def tiny_gpt2(seed: int = 0) -> GPT2LMHeadModel:
    """No dropout, so that a hand computation sees what the trainer saw."""
    return causal_imm.tiny_gpt2(seed, dropout=0.0)


def arguments(tmp_path, **overrides) -> TrainingArguments:
    fields = {
        "output_dir": str(tmp_path / "out"),
        "per_device_train_batch_size": 8,
        "max_steps": 1,
        "learning_rate": 0.5,
        "optim": "sgd",
        "lr_scheduler_type": "constant",
        "max_grad_norm": 0.0,
        "seed": 0,
        "report_to": [],
        "use_cpu": True,
        "save_strategy": "no",
        "logging_strategy": "no",
        "disable_tqdm": True,
        **overrides,
    }
    return TrainingArguments(**fields)


def windows_dataset(count: int = 16) -> list[dict[str, torch.Tensor]]:
    starts = np.random.default_rng(0).integers(0, len(STREAM) - LENGTH, count)
    return [
        {
            "input_ids": torch.as_tensor(STREAM[s : s + LENGTH]),
            "labels": torch.as_tensor(STREAM[s : s + LENGTH]),
        }
        for s in starts
    ]


def trainer_for(tmp_path, method: str, model=None, **config) -> IMMTrainer:
    return IMMTrainer(
        model or tiny_gpt2(),
        arguments(tmp_path),
        imm_config=CausalIMMConfig(method=method, **config),
        corpus=STREAM,
        bigram=estimate_kneser_ney(STREAM, VOCAB, EOS),
        eos_id=EOS,
    )


def lm_term(
    model, input_ids: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(the mean NLL of every next token, the log-probs), by hand."""
    log_probs = torch.log_softmax(model(input_ids=input_ids).logits[:, :-1], dim=-1)
    nll = -log_probs.gather(-1, labels[:, 1:].unsqueeze(-1)).mean()
    return nll, log_probs


@pytest.mark.parametrize("method", ["none", "noising", "imm", "serialized"])
def test_each_methods_loss_is_the_hand_computed_one(tmp_path, method):
    batch = torch.stack([row["input_ids"] for row in windows_dataset(3)])
    trainer = trainer_for(tmp_path, method, lam=0.25, k=2, every=1, gamma0=0.5)
    model = trainer.model.train()
    loss = trainer.compute_loss(model, {"input_ids": batch, "labels": batch})

    generator = torch.Generator().manual_seed(0)  # args.seed
    bigram = estimate_kneser_ney(STREAM, VOCAB, EOS)
    inputs = batch
    if method == "noising":
        noiser = KneserNeyNoiser(STREAM, VOCAB, EOS, 0.5)
        inputs = torch.stack([noiser.noise(row, generator) for row in batch])
        assert not torch.equal(inputs, batch)  # γ0 = 0.5 noised something
    nll, log_probs = lm_term(model, inputs, inputs)
    want = nll
    items = batch[:, 1:].numel()
    if method == "imm":
        pool = WindowPool(STREAM, VOCAB)
        windows = torch.stack([pool.sample(2, LENGTH - 1, generator) for _ in range(3)])
        risk = causal_imm_risk(model, batch[:, :-1], windows, bigram)
        want = nll + 0.25 * risk.total / items
    if method == "serialized":
        serialized = CausalSerializedIMM(50, VOCAB)
        weights = serialized.causal_target_(model, 0, batch[:, :-1], bigram)
        want = nll - 0.25 * (weights * log_probs.reshape(-1, VOCAB)).sum() / items
    assert float(loss.detach()) == pytest.approx(float(want.detach()), rel=1e-5)
    if method in ("imm", "serialized"):
        assert float(want.detach()) != pytest.approx(float(nll.detach()), rel=1e-3)


def test_serialized_imm_on_drawn_positions_is_the_hand_computed_weighted_term(tmp_path):
    """positions = 2: each row's 2 drawn positions (the smallest of a uniform key per
    position, from the trainer's seeded generator) carry the corrected cross-entropy,
    each weighted 5 / 2 (the row's scored positions over the drawn), and Q̂† is the mean
    over the drawn positions."""
    batch = torch.stack([row["input_ids"] for row in windows_dataset(3)])
    trainer = trainer_for(tmp_path, "serialized", lam=0.25, positions=2)
    model = trainer.model.train()
    loss = trainer.compute_loss(model, {"input_ids": batch, "labels": batch})

    generator = torch.Generator().manual_seed(0)  # args.seed
    keys = torch.rand(3, LENGTH - 1, generator=generator)  # a uniform key per position
    chosen = torch.zeros(3, LENGTH - 1, dtype=torch.bool)
    for row in range(3):
        chosen[row, keys[row].argsort()[:2]] = True  # the 2 smallest keys of each row
    nll, log_probs = lm_term(model, batch, batch)
    serialized = CausalSerializedIMM(50, VOCAB)
    bigram = estimate_kneser_ney(STREAM, VOCAB, EOS)
    weights = serialized.causal_target_(model, 0, batch[:, :-1], bigram, attention_mask=chosen)
    items = batch[:, 1:].numel()
    imm = -(5 / 2) * (weights * log_probs[chosen]).sum() / items
    want = nll + 0.25 * imm
    assert float(loss.detach()) == pytest.approx(float(want.detach()), rel=1e-5)
    # The log's imm_risk is per scored position, as without drawing: the drawn positions,
    # weighted, stand for all of them.
    trainer.log({"loss": float(loss.detach())})
    logged = trainer.state.log_history[-1]["imm_risk"]
    assert logged == pytest.approx(float(imm.detach()), rel=1e-5)
    # All positions (the default) is another loss.
    every = trainer_for(tmp_path, "serialized", lam=0.25)
    other = every.compute_loss(every.model.train(), {"input_ids": batch, "labels": batch})
    assert float(other.detach()) != pytest.approx(float(loss.detach()), rel=1e-4)


def test_drawn_positions_read_through_the_head_again_take_the_gradient_of_the_logits_path(
    tmp_path, monkeypatch
):
    """The drawn positions' term reads the vocabulary head's input through the head again
    (no gradient pass over every position's logits); a model whose head cannot be hooked
    takes those positions' rows of the main pass's log-probs instead: the same loss and
    gradients."""
    batch = torch.stack([row["input_ids"] for row in windows_dataset(3)])
    grads = []
    for hooked in (True, False):
        trainer = trainer_for(tmp_path, "serialized", lam=0.5, positions=2)
        model = trainer.model.train()
        calls: list[bool] = []
        head = model.get_output_embeddings()

        def count(module, *_, calls=calls, head=head):
            calls.append(module is head)

        head.register_forward_hook(count)
        if not hooked:
            monkeypatch.setattr(model, "get_output_embeddings", lambda: None)
        loss = trainer.compute_loss(model, {"input_ids": batch, "labels": batch})
        loss.backward()
        assert sum(calls) == (2 if hooked else 1)  # the main pass, then the drawn rows
        grads.append((float(loss.detach()), [p.grad.clone() for p in model.parameters()]))
    (hooked_loss, hooked), (plain_loss, plain) = grads
    assert hooked_loss == pytest.approx(plain_loss, rel=1e-6)
    for a, b in zip(hooked, plain, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)


def test_drawn_positions_weigh_each_row_by_its_scored_positions(tmp_path):
    """A padded row with no more scored positions than ``positions`` keeps them all, at
    weight 1; the others draw ``positions`` of their scored ones."""
    trainer = trainer_for(tmp_path, "serialized", positions=3)
    scored = torch.tensor(
        [[True] * 6, [True, True, True, False, False, False], [True] * 5 + [False]]
    )
    chosen, weights = trainer.objective.chosen_positions(scored)
    assert chosen.sum(dim=1).tolist() == [3, 3, 3]
    assert bool((chosen <= scored).all()) and torch.equal(chosen[1], scored[1])
    assert weights.tolist() == [2.0, 1.0, 5 / 3]
    everything, ones = trainer_for(tmp_path, "serialized").objective.chosen_positions(scored)
    assert torch.equal(everything, scored) and ones.tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    "method, clip", [("none", 0.0), ("noising", 0.0), ("imm", 0.0), ("none", 0.05), ("imm", 0.05)]
)
def test_gradient_accumulation_4_by_2_takes_the_step_of_1_by_8(tmp_path, method, clip):
    """The terms are sums over scored positions divided by Trainer's num_items_in_batch,
    and rows draw their windows and noise on their own: one optimizer step over the same 8
    rows moves the weights alike. With clipping, each term's gradient is clipped once per
    step, on what the step's micro-batches accumulated (as Trainer clips the sum), not
    micro-batch by micro-batch."""
    data = windows_dataset()
    stepped, logged = [], []
    for batch, accumulate in ((8, 1), (2, 4)):
        args = arguments(
            tmp_path,
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=accumulate,
            logging_strategy="steps",
            logging_steps=1,
            max_grad_norm=clip,
        )
        trainer = IMMTrainer(
            tiny_gpt2(),
            args,
            train_dataset=data,
            imm_config=CausalIMMConfig(method=method, lam=0.5, k=3, every=1, gamma0=0.5),
            corpus=STREAM,
            bigram=estimate_kneser_ney(STREAM, VOCAB, EOS),
            eos_id=EOS,
        )
        trainer.train()
        stepped.append([p.detach().clone() for p in trainer.model.parameters()])
        (logs,) = [entry for entry in trainer.state.log_history if "lm_loss" in entry]
        logged.append(logs)
    start = list(tiny_gpt2().parameters())
    assert any(not torch.allclose(a, b) for a, b in zip(stepped[0], start, strict=True))
    for a, b in zip(*stepped, strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)
    # The logged terms are per-position means of the step, not of one micro-batch.
    for key in ("loss", "lm_loss", "imm_risk"):
        assert (key in logged[0]) == (key in logged[1])
        if key in logged[0]:
            assert logged[1][key] == pytest.approx(logged[0][key], rel=1e-5), key
    assert 1.0 < logged[0]["lm_loss"] < 3.0  # a fresh model over 7 ids: about ln 7
    if clip and method == "imm":
        # Both terms' gradients were clipped (their norms before clipping exceed it).
        for key in ("lm_grad_norm", "imm_grad_norm"):
            assert logged[0][key] > clip and logged[1][key] == pytest.approx(
                logged[0][key], rel=1e-5
            ), key
    else:
        assert "imm_grad_norm" not in logged[0]


def _clip(grads: list[torch.Tensor], bound: float) -> list[torch.Tensor]:
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    return [g * min(1.0, bound / float(norm)) for g in grads]


@pytest.mark.parametrize("clip_separately", [None, True])
def test_serialized_imm_clips_its_terms_sum_as_one_unless_asked_to_clip_them_apart(
    tmp_path, clip_separately
):
    """Serialized IMM's two terms are one soft-target cross-entropy: by default Trainer
    back-propagates and clips their sum once, θ − lr · clip(∇lm + λ∇ĨMM); with
    ``clip_separately`` each is clipped on its own, θ − lr · (clip(∇lm) + λ clip(∇ĨMM)).
    Sampled IMM clips apart by default (App. D.2.2). Both steps by hand, on the trainer's
    one batch of 8 rows."""
    data = windows_dataset(8)
    bound, lam, lr = 0.05, 0.5, 0.5
    args = arguments(tmp_path, max_grad_norm=bound, logging_strategy="steps", logging_steps=1)
    config = CausalIMMConfig(method="serialized", lam=lam, clip_separately=clip_separately)
    bigram = estimate_kneser_ney(STREAM, VOCAB, EOS)
    trainer = IMMTrainer(
        tiny_gpt2(),
        args,
        train_dataset=data,
        imm_config=config,
        corpus=STREAM,
        bigram=bigram,
        eos_id=EOS,
    )
    assert (trainer.term_gradients is not None) == bool(clip_separately)
    trainer.train()
    (logs,) = [entry for entry in trainer.state.log_history if "lm_loss" in entry]
    assert ("imm_grad_norm" in logs) == bool(clip_separately)

    # By hand: the batch is the 8 rows (their order changes neither term).
    model = tiny_gpt2().train()
    params = list(model.parameters())
    batch = torch.stack([row["input_ids"] for row in data])
    nll, log_probs = lm_term(model, batch, batch)
    weights = CausalSerializedIMM(50, VOCAB).causal_target_(model, 0, batch[:, :-1], bigram)
    imm = -(weights * log_probs.reshape(-1, VOCAB)).sum() / batch[:, 1:].numel()
    g_lm = torch.autograd.grad(nll, params, retain_graph=True)
    g_imm = torch.autograd.grad(imm, params)
    together = _clip([a + lam * b for a, b in zip(g_lm, g_imm, strict=True)], bound)
    apart = [
        a + lam * b
        for a, b in zip(_clip(list(g_lm), bound), _clip(list(g_imm), bound), strict=True)
    ]
    want = apart if clip_separately else together
    other = together if clip_separately else apart
    got = [p.detach() for p in trainer.model.parameters()]
    moved = [p.detach() - lr * g for p, g in zip(params, want, strict=True)]
    for a, b in zip(got, moved, strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)
    wrong = [p.detach() - lr * g for p, g in zip(params, other, strict=True)]
    assert any(not torch.allclose(a, b, atol=1e-5) for a, b in zip(got, wrong, strict=True))
    assert CausalIMMConfig(method="imm").clips_separately
    assert not CausalIMMConfig(method="imm", clip_separately=False).clips_separately
    assert not CausalIMMConfig(method="serialized", lam=0).clips_separately


def test_bad_input_is_refused_naming_the_field(tmp_path):
    for fields, message in (
        ({"method": "kd"}, "method must be one of none, noising, imm, serialized"),
        ({"k": 0}, "k must be an integer >= 1, got 0"),
        ({"every": 0}, "every must be an integer >= 1, got 0"),
        ({"lam": -0.1}, "lam must be"),
        ({"positions": 0}, "positions must be an integer >= 1 or None, got 0"),
        ({"clip_separately": "yes"}, "clip_separately must be true, false or None, got 'yes'"),
    ):
        with pytest.raises(ConfigError, match=message) as raised:
            CausalIMMConfig(**fields)
        assert raised.value.field == next(iter(fields))
    bert = BertForMaskedLM(
        BertConfig(
            vocab_size=VOCAB,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=16,
        )
    )
    with pytest.raises(
        ValueError, match=r"imm_config: a masked LM \(BertForMaskedLM\) takes a Mas"
    ):
        trainer_for(tmp_path, "imm", model=bert)
    torch.manual_seed(0)
    base = GPT2Model(GPT2Config(vocab_size=VOCAB, n_embd=16, n_layer=1, n_head=2))
    with pytest.raises(ValueError, match="a causal or a masked language model .* got GPT2Model"):
        trainer_for(tmp_path, "imm", model=base)
    other = estimate_kneser_ney(np.array([0, 1, 2, 8]), 9, 8)
    with pytest.raises(ValueError, match=r"bigram: its vocabulary \(9 ids\) differs"):
        IMMTrainer(
            tiny_gpt2(),
            arguments(tmp_path),
            imm_config=CausalIMMConfig(),
            corpus=STREAM,
            bigram=other,
        )
    with pytest.raises(ValueError, match="method imm needs the training corpus and its bigram"):
        IMMTrainer(tiny_gpt2(), arguments(tmp_path), imm_config=CausalIMMConfig())
    with pytest.raises(ValueError, match="at least 2 tokens"):
        IMMTrainer(
            tiny_gpt2(),
            arguments(tmp_path),
            imm_config=CausalIMMConfig(),
            corpus=np.array([], dtype=np.int64),
            bigram=estimate_kneser_ney(STREAM, VOCAB, EOS),
        )
