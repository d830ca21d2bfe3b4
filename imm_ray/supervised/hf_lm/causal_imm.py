"""Sampled IMM for a causal language model (any ``AutoModelForCausalLM``): the induced
bigram Q̂(· | x̄) of the model, matched against the Kneser–Ney bigram P̂(· | x̄).

At position i of a training row, the model predicts the next token from x̄ = ``input_ids[i]``
and the row's tokens before it. A history of x̄ is a window of the training stream that
ends in x̄ (Eq. (10)); the model's prediction after it is Q(· | x̄, x̃), and Q̂(· | x̄) is
their mean over k uniform draws from extend(x̄) (Eq. (12)).

**One forward pass scores every position of a window.** A causal LM's output at position
p of a window depends on the window's first p + 1 tokens only: running the window once
gives the prediction after each of its prefixes, and every prefix is a window of the
stream that ends in its last token. So the histories are drawn as whole windows at
uniform offsets of the training stream (:class:`WindowPool`): position p of a uniform
window is a uniform occurrence of its own token (its prefix a uniform draw from
extend(token), of length p + 1, the lengths the batch's own positions have), and every
position whose token is a context of the batch is a member of that context's Q̂. Drawing
per batch position a window that ends in its x̄, as the LSTM's branch does, reads one
position of each window instead of all of them: about L times the work for windows of L
tokens (``benchmarks/results.md`` measures it).

Each row draws k windows of its own length, and the members of a context of the row are
all positions of those windows that hold it: a context frequent in the corpus gets many,
a rare one few or none, about k per occurrence in the row on average (the row's
k·L window positions hold a context as often as the corpus does, and the row's L
positions do too). A position whose context no window of its row holds is left out
(:class:`CausalIMMRisk` counts them). The risk of a position is −Σ_y P̂(y | x̄) log Q̂(y | x̄),
with log Q̂ a stable per-context ``logsumexp`` of the members' log-probs, so autograd
gives the exact crosstalk gradient (Eq. (20)). Pooling per row keeps a row's term
independent of the other rows of its batch, so gradient accumulation gives the same
gradient as one large batch. Like the LSTM's and BERT's branches, this one runs
without dropout.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from imm_ray import checks
from imm_ray.restricted.kneser_ney import KneserNeyBigram


class WindowPool:
    """Windows of one training stream at uniform offsets: the histories of a causal LM."""

    def __init__(self, stream: np.ndarray | torch.Tensor, vocab_size: int) -> None:
        stream = torch.as_tensor(np.asarray(stream), dtype=torch.int64)
        if stream.dim() != 1 or len(stream) < 2:
            raise ValueError(f"the training stream must hold at least 2 tokens, got {len(stream)}")
        if int(stream.min()) < 0 or int(stream.max()) >= vocab_size:
            raise ValueError(f"the training stream must hold ids in [0, {vocab_size})")
        self.stream, self.vocab_size = stream, vocab_size

    def sample(
        self, count: int, length: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``count`` windows of ``length`` tokens, ``[count, length]``, each at a uniform
        offset of the stream (``length`` at most the stream's)."""
        checks.integer("count", count, 1)
        checks.integer("length", length, 1)
        if length > len(self.stream):
            raise ValueError(
                f"length must be at most the stream's {len(self.stream)} tokens, got {length}"
            )
        starts = torch.randint(len(self.stream) - length + 1, (count,), generator=generator)
        return self.stream[starts.unsqueeze(1) + torch.arange(length)]


def pooled_induced_log_probs(
    log_probs: torch.Tensor, groups: torch.Tensor, count: int
) -> torch.Tensor:
    """log Q̂ of ``count`` contexts, ``[count, V]``: the log of the mean of the members'
    probabilities per context, where ``log_probs [S, V]`` are the members and ``groups
    [S]`` (in ``[0, count)``) the context of each; every context needs a member.

    A per-context ``logsumexp``: each context's largest member log-prob (not
    differentiated, as a shift it does not change the value) is taken out before ``exp``.
    """
    members = torch.bincount(groups, minlength=count)
    if len(members) != count or bool((members == 0).any()):
        raise ValueError("every context needs at least one member")
    index = groups.unsqueeze(1).expand_as(log_probs)
    shift = torch.full(
        (count, log_probs.shape[1]), float("-inf"), dtype=log_probs.dtype, device=log_probs.device
    )
    shift = shift.scatter_reduce(0, index, log_probs.detach(), reduce="amax")
    sums = torch.zeros_like(shift).index_add(0, groups, torch.exp(log_probs - shift[groups]))
    return torch.log(sums) + shift - torch.log(members.to(log_probs.dtype)).unsqueeze(1)


@dataclass(frozen=True)
class CausalIMMRisk:
    """The IMM risk of a batch, summed over the positions it covers."""

    total: torch.Tensor
    """Σ over covered positions of −Σ_y P̂(y | x̄) log Q̂(y | x̄), with gradient."""
    covered: int
    """Positions whose context at least one of their row's windows holds."""
    positions: int
    """Positions scored (attended positions of the batch)."""
    members: int
    """Window positions that were members of a covered context."""

    @property
    def risk(self) -> torch.Tensor:
        """The mean over covered positions."""
        return self.total / self.covered


@contextlib.contextmanager
def _without_dropout(model: torch.nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def causal_imm_risk(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    windows: torch.Tensor,
    bigram: KneserNeyBigram,
    attention_mask: torch.Tensor | None = None,
) -> CausalIMMRisk | None:
    """The sampled IMM risk of the batch ``input_ids [B, L]`` with the histories
    ``windows [B, k, W]``, row b's k windows for row b's positions (see the module
    docstring); None when no attended position's context occurs in its row's windows.
    ``model`` is a causal LM (its output has ``logits``); ``bigram`` lives on any device,
    its rows move to the model's.

    Each row pools its own windows, so a row's term depends on that row and its windows
    only: the risk of a batch is the sum of its rows', however the rows are split into
    micro-batches (gradient accumulation)."""
    device = input_ids.device
    rows, length = input_ids.shape
    if windows.dim() != 3 or windows.shape[0] != rows:
        raise ValueError(
            f"windows must be [{rows}, k, W] (k windows per row), got {list(windows.shape)}"
        )
    vocab = bigram.vocab_size
    # A (row, token) pair is one key: the contexts of a row are pooled over its windows.
    row_of = torch.arange(rows).unsqueeze(1)
    keys = (row_of * vocab + input_ids.cpu()).reshape(-1)
    if attention_mask is not None:
        keys = keys[attention_mask.cpu().reshape(-1) > 0]
    positions = len(keys)
    distinct, per_key = torch.unique(keys, return_counts=True)
    windows = windows.cpu()
    window_keys = (row_of.unsqueeze(2) * vocab + windows).reshape(-1)
    at = torch.searchsorted(distinct, window_keys).clamp(max=len(distinct) - 1)
    member = distinct[at] == window_keys
    found = torch.bincount(at[member], minlength=len(distinct)) > 0
    if not bool(found.any()):
        return None
    # Renumber the keys that have members 0 … U − 1.
    renumber = torch.cumsum(found.long(), 0) - 1
    group = renumber[at[member]]
    with _without_dropout(model):
        logits = model(input_ids=windows.reshape(-1, windows.shape[-1]).to(device)).logits
    chosen = logits.reshape(-1, logits.shape[-1])[member.nonzero().squeeze(1).to(device)]
    log_probs = torch.log_softmax(chosen.float(), dim=-1)
    covered_keys = distinct[found]
    log_q = pooled_induced_log_probs(log_probs, group.to(device), len(covered_keys))
    contexts = covered_keys % vocab
    target = bigram.rows(contexts.to(bigram.unigram.device)).to(device)
    relevant = target > 0
    cross = -(target * torch.where(relevant, log_q, torch.zeros_like(log_q))).sum(dim=1)
    weight = per_key[found].to(device=device, dtype=cross.dtype)
    return CausalIMMRisk((cross * weight).sum(), int(weight.sum()), positions, int(member.sum()))
