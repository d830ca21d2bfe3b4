"""Clipping the terms of a loss separately (App. D.2.2): ``Σ_term weight · clip(∇term)``,
handed to ``transformers.Trainer`` as a surrogate loss.

``Trainer`` back-propagates the loss ``compute_loss`` returns and clips the gradient of
the sum. To clip each term's gradient on its own, ``compute_loss`` takes each term's
gradient with ``torch.autograd.grad``, clips it, and returns
``Σ_p ⟨p, g_p⟩ − (same).detach() + loss.detach()``: its value is the loss and its
gradient the clipped sum, so Trainer's own ``backward``, gradient accumulation and
optimizer step run unchanged (with Trainer's own clipping turned off).
"""

from __future__ import annotations

import copy
from typing import Any

import torch


def separate_clipping(args: Any, two_terms: bool) -> tuple[Any, float | None]:
    """``(Trainer arguments, the terms' bound)``: where the loss has several terms and
    ``args.max_grad_norm > 0``, a copy of ``args`` with Trainer's own clipping of the sum
    turned off (the caller's object is not touched) and that bound; else ``args`` and
    None. ``fp16`` (loss scaling) cannot be combined with it; ``bf16`` can."""
    if args is None or not two_terms or args.max_grad_norm <= 0:
        return args, None
    if args.fp16:
        raise ValueError(
            "fp16 cannot be combined with clipping the loss terms separately "
            "(max_grad_norm > 0): use bf16, or max_grad_norm 0"
        )
    bound = float(args.max_grad_norm)
    args = copy.copy(args)
    args.max_grad_norm = 0.0
    return args, bound


def clipped_term_gradients(
    terms: dict[str, torch.Tensor], weights: dict[str, float], params: list, max_norm: float
) -> list[torch.Tensor | None]:
    """``Σ_term weight · clip(∇term, max_norm)`` per parameter."""
    total: list[torch.Tensor | None] = [None] * len(params)
    names = list(terms)
    for name, value in terms.items():
        # Terms may share a forward pass (serialized IMM reads the main pass's log-probs):
        # every graph but the last one's is kept for the terms after it.
        last = name == names[-1]
        grads = torch.autograd.grad(value, params, allow_unused=True, retain_graph=not last)
        present = [g for g in grads if g is not None]
        if not present:
            continue
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in present]))
        factor = weights[name] * torch.clamp(max_norm / (norm + 1e-6), max=1.0)
        for i, g in enumerate(grads):
            if g is not None:
                total[i] = g * factor if total[i] is None else total[i] + g * factor
    return total


def clipped_surrogate(
    terms: dict[str, torch.Tensor],
    weights: dict[str, float],
    params: list,
    max_norm: float,
    loss: torch.Tensor,
) -> torch.Tensor:
    """A loss whose value is ``loss`` and whose gradient is
    :func:`clipped_term_gradients` (module docstring)."""
    grads = clipped_term_gradients(terms, weights, params, max_norm)
    surrogate = sum(
        (p * g.detach()).sum() for p, g in zip(params, grads, strict=True) if g is not None
    )
    return surrogate - surrogate.detach() + loss.detach()
