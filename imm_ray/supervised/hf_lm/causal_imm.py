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

The members of a context are pooled over all its positions in the pool, so a context
frequent in the corpus gets many and a rare one few or none; ``k`` windows per batch row
give a context about k members per occurrence in the batch on average. A batch position
whose context no window holds is left out of the risk (:class:`CausalIMMRisk` counts them).
The risk is the mean over the covered positions of −Σ_y P̂(y | x̄) log Q̂(y | x̄), with
log Q̂ a stable per-context ``logsumexp`` of the members' log-probs, so autograd gives the
exact crosstalk gradient (Eq. (20)). Like the LSTM's and BERT's branches, this one runs
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
    """The IMM risk of a batch and what it covered."""

    risk: torch.Tensor
    """The mean over covered positions of −Σ_y P̂(y | x̄) log Q̂(y | x̄), with gradient."""
    covered: int
    """Positions whose context at least one window holds."""
    positions: int
    """Positions scored (attended positions of the batch)."""
    members: int
    """Window positions that were members of a covered context."""


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
    ``windows [M, W]`` (see the module docstring); None when no attended position's
    context occurs in the windows. ``model`` is a causal LM (its output has ``logits``);
    ``bigram`` lives on any device, its rows move to the model's."""
    device = input_ids.device
    contexts = input_ids.reshape(-1)
    if attention_mask is not None:
        contexts = contexts[attention_mask.reshape(-1) > 0]
    positions = len(contexts)
    vocab = bigram.vocab_size
    distinct, per_context = torch.unique(contexts.cpu(), return_counts=True)
    # Which context (index into distinct) each window position is a member of; -1: none.
    lookup = torch.full((vocab,), -1, dtype=torch.int64)
    lookup[distinct] = torch.arange(len(distinct))
    windows = windows.cpu()
    group = lookup[windows.reshape(-1)]
    member = group >= 0
    found = torch.bincount(group[member], minlength=len(distinct)) > 0
    if not bool(found.any()):
        return None
    # Renumber the contexts that have members 0 … U − 1.
    renumber = torch.cumsum(found.long(), 0) - 1
    group = renumber[group[member]]
    with _without_dropout(model):
        logits = model(input_ids=windows.to(device)).logits
    rows = logits.reshape(-1, logits.shape[-1])[member.nonzero().squeeze(1).to(device)]
    log_probs = torch.log_softmax(rows.float(), dim=-1)
    covered_contexts = distinct[found]
    log_q = pooled_induced_log_probs(log_probs, group.to(device), len(covered_contexts))
    target = bigram.rows(covered_contexts.to(bigram.unigram.device)).to(device)
    relevant = target > 0
    cross = -(target * torch.where(relevant, log_q, torch.zeros_like(log_q))).sum(dim=1)
    weight = per_context[found].to(device=device, dtype=cross.dtype)
    covered = int(weight.sum())
    risk = (cross * weight).sum() / covered
    return CausalIMMRisk(risk, covered, positions, int(member.sum()))
