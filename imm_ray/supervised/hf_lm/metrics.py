"""Perplexities of a causal Hugging Face LM, as :mod:`imm_ray.supervised.lm.metrics`
measures the LSTM's (Sec. 7.2, Table 5), for a model that reads at most ``length`` tokens.

A split, preceded by one ``<eos>`` so that every token is predicted, is cut into chunks of
``length`` inputs, each chunk's targets its inputs shifted by one (consecutive chunks share
one token: the last target of one is the first input of the next). Every position is
predicted from its chunk's tokens up to it, without dropout, as in training.

- **Perplexity**: exp of the mean negative log-likelihood of the split's tokens.
- **Induced-bigram perplexity** (Table 5): Q̂(y | x) is the model's prediction averaged
  over every training position whose input is x, each with its chunk's history (Eq. (6));
  a split is then scored as a bigram, every token from its previous one (the first from
  ``<eos>``), as the Kneser–Ney bigram is. A word that is never an input in training gets
  the mean prediction over all positions.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

from imm_ray import checks


def chunks(
    ids: np.ndarray | torch.Tensor, eos_id: int, length: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(inputs, targets, mask)``, each ``[N, length]``: the split preceded by ``<eos>``
    in chunks of ``length`` inputs; ``mask`` is 0 on the last chunk's padding."""
    checks.integer("length", length, 1)
    ids = torch.as_tensor(np.asarray(ids), dtype=torch.int64)
    stream = torch.cat([torch.tensor([eos_id]), ids])
    if len(stream) < 2:
        raise ValueError("the split is empty")
    count = math.ceil((len(stream) - 1) / length)
    padded = torch.full((count * length + 1,), eos_id, dtype=torch.int64)
    padded[: len(stream)] = stream
    inputs = padded[:-1].view(count, length)
    targets = padded[1:].view(count, length)
    mask = (torch.arange(count * length) < len(stream) - 1).view(count, length)
    return inputs, targets, mask


def _batches(
    ids: np.ndarray | torch.Tensor, eos_id: int, length: int, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    checks.integer("batch_size", batch_size, 1)
    inputs, targets, mask = chunks(ids, eos_id, length)
    for start in range(0, len(inputs), batch_size):
        part = slice(start, start + batch_size)
        yield inputs[part], targets[part], mask[part]


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def perplexity(
    model: torch.nn.Module,
    ids: np.ndarray | torch.Tensor,
    eos_id: int,
    length: int,
    batch_size: int = 16,
) -> float:
    """exp of the mean negative log-likelihood of the split's tokens (module docstring)."""
    was_training = model.training
    model.eval()
    device = _device(model)
    total, count = 0.0, 0
    try:
        for inputs, targets, mask in _batches(ids, eos_id, length, batch_size):
            logits = model(input_ids=inputs.to(device)).logits.float()
            log_probs = torch.log_softmax(logits, dim=-1)
            picked = log_probs.gather(-1, targets.to(device).unsqueeze(-1)).squeeze(-1)
            keep = mask.to(device)
            total -= float(picked[keep].sum())
            count += int(keep.sum())
    finally:
        model.train(was_training)
    return math.exp(total / count)


@torch.no_grad()
def induced_bigram(
    model: torch.nn.Module,
    train: np.ndarray | torch.Tensor,
    eos_id: int,
    length: int,
    batch_size: int = 16,
) -> torch.Tensor:
    """Q̂(y | x), ``[V, V]`` float32 on the CPU: the model's induced bigram on ``train``
    (module docstring)."""
    was_training = model.training
    model.eval()
    device = _device(model)
    vocab_size = model.get_output_embeddings().weight.shape[0]
    sums = torch.zeros(vocab_size, vocab_size, dtype=torch.float64, device=device)
    counts = torch.zeros(vocab_size, dtype=torch.float64, device=device)
    try:
        for inputs, _, mask in _batches(train, eos_id, length, batch_size):
            logits = model(input_ids=inputs.to(device)).logits.float()
            probs = torch.softmax(logits, dim=-1).reshape(-1, vocab_size)
            keep = mask.reshape(-1).to(device)
            flat = inputs.reshape(-1).to(device)[keep]
            sums.index_add_(0, flat, probs[keep].double())
            counts.index_add_(0, flat, torch.ones_like(flat, dtype=counts.dtype))
    finally:
        model.train(was_training)
    unseen = counts == 0
    sums[unseen] = sums.sum(0) / counts.sum()
    counts[unseen] = 1.0
    return (sums / counts[:, None]).float().cpu()
