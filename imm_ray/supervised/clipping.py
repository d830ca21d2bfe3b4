"""Clipping the terms of a loss separately (App. D.2.2): ``Σ_term weight · clip(∇term)``
in a ``transformers.Trainer``.

``Trainer`` back-propagates the loss ``compute_loss`` returns and, once per optimizer
step, clips the gradient of the sum accumulated over the step's micro-batches. To clip
each term's gradient on its own, and still once per step (:class:`TermGradients`), the
first term takes Trainer's ``backward``, the others' gradients are accumulated in
buffers of their own, and before the optimizer's step each is clipped and added (with
Trainer's own clipping turned off). A step then moves the weights alike whether its
rows come in one batch or through gradient accumulation.
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


def _global_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


class TermGradients:
    """Each term's gradient over an optimizer step, clipped on its own before they are
    added (App. D.2.2), as Trainer clips the sum: once per step, on the gradient
    accumulated over the step's micro-batches.

    The first term (the primary one) takes Trainer's own ``backward`` into ``p.grad``:
    :meth:`add` returns a loss whose value is the weighted sum of the terms and whose
    gradient is the first term's, and takes every other term's gradient with
    ``torch.autograd.grad`` into a buffer of its own. :meth:`clip_and_combine_`, before
    the optimizer's step, sets ``p.grad = Σ_term weight · clip(term's gradient)``.
    Under ``torch.distributed`` the buffers are averaged over the processes first, as
    DistributedDataParallel averages ``p.grad``.
    """

    def __init__(self, max_norm: float) -> None:
        self.max_norm = float(max_norm)
        self.weights: dict[str, float] = {}
        self.buffers: dict[str, list[torch.Tensor | None]] = {}
        #: Each term's gradient norm before clipping, summed over steps since
        #: :meth:`pop_norms`, and the number of steps.
        self.norm_sums: dict[str, float] = {}
        self.steps = 0
        self.primary: str | None = None

    def add(
        self,
        terms: dict[str, torch.Tensor],
        weights: dict[str, float],
        params: list[torch.Tensor],
        scale: float = 1.0,
    ) -> torch.Tensor:
        """Accumulates a micro-batch's terms but the first (each times ``scale``: the
        factor Trainer applies to the loss it back-propagates, 1 / the accumulation
        steps where the loss is a micro-batch mean) and returns the loss for Trainer's
        ``backward`` (see the class docstring)."""
        names = list(terms)
        primary = names[0]
        if self.primary is None:
            self.primary = primary
        elif primary != self.primary:
            raise ValueError(
                f"the first term must be the same in every micro-batch: {self.primary}, "
                f"then {primary}"
            )
        for name in names[1:]:
            # Terms may share the primary's forward pass (serialized IMM reads its
            # log-probs): every graph is kept for Trainer's backward after them.
            grads = torch.autograd.grad(terms[name], params, allow_unused=True, retain_graph=True)
            buffer = self.buffers.get(name)
            if buffer is None:
                buffer = self.buffers[name] = [None] * len(params)
            for i, g in enumerate(grads):
                if g is None:
                    continue
                if scale != 1.0:
                    g = g * scale
                buffer[i] = g if buffer[i] is None else buffer[i].add_(g)
        self.weights = dict(weights)
        total = sum(weights[name] * value for name, value in terms.items()).detach()
        first = terms[primary]
        return total + (first - first.detach())

    def clip_and_combine_(self, params: list[torch.Tensor]) -> None:
        """``p.grad = Σ_term weight · clip(gradient, max_norm)`` over the step's terms
        (the primary's gradient is ``p.grad`` on entry); the buffers are emptied."""
        if self.primary is None:
            return
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if distributed and torch.distributed.get_world_size() > 1:
            self._average_over_processes(params, torch.distributed.get_world_size())
        gradients = {self.primary: [p.grad for p in params]}
        gradients.update(self.buffers)
        combined: list[torch.Tensor | None] = gradients[self.primary]
        for name, grads in gradients.items():
            present = [g for g in grads if g is not None]
            if not present:
                continue
            norm = _global_norm(present)
            self.norm_sums[name] = self.norm_sums.get(name, 0.0) + float(norm)
            factor = self.weights[name] * torch.clamp(self.max_norm / (norm + 1e-6), max=1.0)
            if name == self.primary:
                torch._foreach_mul_(present, factor)
                continue
            for i, g in enumerate(grads):
                if g is None:
                    continue
                g.mul_(factor)
                if combined[i] is None:
                    combined[i] = params[i].grad = g
                else:
                    combined[i].add_(g)  # type: ignore[union-attr]
        self.steps += 1
        self.buffers.clear()

    def _average_over_processes(self, params: list[torch.Tensor], world: int) -> None:
        """Every process reduces every term of the weights but the first, each parameter's
        buffer in the same order, so that none waits for another forever: a term this
        process's micro-batches lacked (sampled IMM with no member in a batch), or a
        parameter it left without a gradient, is zeros here."""
        for name in self.weights:
            if name == self.primary:
                continue
            buffer = self.buffers.setdefault(name, [None] * len(params))
            for i, p in enumerate(params):
                if buffer[i] is None:
                    buffer[i] = torch.zeros_like(p)
                torch.distributed.all_reduce(buffer[i])
                buffer[i].div_(world)

    def pop_norms(self) -> dict[str, float]:
        """Each term's mean gradient norm before clipping over the steps since the last
        call."""
        means = (
            {name: total / self.steps for name, total in self.norm_sums.items()}
            if self.steps
            else {}
        )
        self.norm_sums, self.steps = {}, 0
        return means
