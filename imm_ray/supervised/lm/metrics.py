"""Perplexities of an LSTM language model, as the paper measures them (Sec. 7.2, Table 5).

- **Perplexity** of a split: the stream, preceded by one ``<eos>`` so that every token is
  predicted, is cut into ``rows`` contiguous rows; the model reads them with its state
  carried from chunk to chunk, without dropout. Validation uses the training batch's rows
  (as in training); test uses one row, i.e. the whole split as one history (the paper's
  "only 1 unroll position is used during testing": with the state carried, reading one
  token at a time or ``unroll`` at a time gives the same predictions).
- **Induced-bigram perplexity** (Table 5): Q̂(y | x) is the model's prediction averaged
  over every training position whose previous word is x, each with its full history
  (Eq. (6)); a split is then scored as a bigram, every token from its previous one (the
  first from ``<eos>``), as the Kneser–Ney bigram is. A word that is never a context in
  training gets the mean prediction over all positions.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from imm_ray.supervised.lm.model import LSTMLanguageModel


def batchify(ids: np.ndarray | torch.Tensor, rows: int) -> torch.Tensor:
    """``[rows, T // rows]``: the stream cut into contiguous rows (the tail is dropped)."""
    ids = torch.as_tensor(np.asarray(ids), dtype=torch.int64)
    width = len(ids) // rows
    if width < 2:
        raise ValueError(f"a stream of {len(ids)} tokens is too short for {rows} rows")
    return ids[: rows * width].view(rows, width)


def _chunks(data: torch.Tensor, unroll: int):
    for start in range(0, data.shape[1] - 1, unroll):
        steps = min(unroll, data.shape[1] - 1 - start)
        yield data[:, start : start + steps], data[:, start + 1 : start + 1 + steps]


def _with_eos(ids: np.ndarray | torch.Tensor, eos_id: int) -> torch.Tensor:
    ids = torch.as_tensor(np.asarray(ids), dtype=torch.int64)
    return torch.cat([torch.tensor([eos_id]), ids])


@torch.no_grad()
def perplexity(
    model: LSTMLanguageModel, ids: np.ndarray, eos_id: int, rows: int = 1, unroll: int = 35
) -> float:
    """exp of the mean negative log-likelihood of the split's tokens (module docstring)."""
    device = model.decoder.weight.device
    data = batchify(_with_eos(ids, eos_id), rows).to(device)
    state = model.init_state(rows)
    total, count = 0.0, 0
    for inputs, targets in _chunks(data, unroll):
        log_probs, state = model(inputs, state, dropout=False)
        total -= float(log_probs.gather(-1, targets.unsqueeze(-1)).sum())
        count += targets.numel()
    return math.exp(total / count)


@torch.no_grad()
def induced_bigram(
    model: LSTMLanguageModel,
    train: np.ndarray,
    eos_id: int,
    rows: int = 20,
    unroll: int = 35,
) -> torch.Tensor:
    """Q̂(y | x), ``[V, V]`` float32 on the CPU: the model's induced bigram on ``train``.

    The training stream (preceded by ``<eos>``) is read in ``rows`` rows with the state
    carried, without dropout; every prediction is added to the row of its input word.
    """
    device = model.decoder.weight.device
    v = model.vocab_size
    data = batchify(_with_eos(train, eos_id), rows).to(device)
    sums = torch.zeros(v, v, device=device)
    counts = torch.zeros(v, device=device)
    state = model.init_state(rows)
    for inputs, _ in _chunks(data, unroll):
        log_probs, state = model(inputs, state, dropout=False)
        flat = inputs.reshape(-1)
        sums.index_add_(0, flat, log_probs.exp().reshape(-1, v))
        counts.index_add_(0, flat, torch.ones_like(flat, dtype=counts.dtype))
    unseen = counts == 0
    sums[unseen] = sums.sum(0) / counts.sum()
    counts[unseen] = 1.0
    return (sums / counts[:, None]).cpu()


def bigram_perplexity(table: torch.Tensor, ids: np.ndarray, eos_id: int) -> float:
    """Perplexity of a bigram table ``[V, V]`` on a stream, the first token from ``<eos>``."""
    ids = torch.as_tensor(np.asarray(ids), dtype=torch.int64)
    previous = torch.cat([torch.tensor([eos_id]), ids[:-1]])
    return math.exp(-float(torch.log(table[previous, ids].double()).mean()))
