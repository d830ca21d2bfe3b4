"""Serialized IMM (Section 5, Eq. (13), Algorithm 2): IMM at O(1) overhead.

Instead of re-evaluating k members per row, serialized IMM trains the full model on its
own row's context with a corrected cross-entropy,

    ĨMM_t(Q) = −Σ_y [Q†(y | x_t) / Q̂†(y | x̄_t)] P̂(y | x̄_t) log Q(y | x_t),

whose gradient, averaged over the dataset, is the IMM gradient (exactly so when the
snapshot Q† equals Q). The correction comes from a stale snapshot Q† and its induced
model Q̂†, refreshed every r steps (Algorithm 2, lines 4–13).
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from imm_ray import checks
from imm_ray.imm._checks import check_pair, check_reduction, check_rows, cross_entropy, reduce


def serialized_correction(
    stale_log_probs: torch.Tensor, stale_induced_log_probs: torch.Tensor
) -> torch.Tensor:
    """The correction Q†(y | x) / Q̂†(y | x̄) of Eq. (13), ``[B, C]``, without gradient.

    Args:
        stale_log_probs: ``[B, C]``, log Q†(y | x_t) of the stale snapshot on each row.
        stale_induced_log_probs: ``[B, C]``, log Q̂†(y | x̄_t), the snapshot's induced
            model (e.g. :func:`~imm_ray.imm.induced_log_probs` over extend(x̄_t)).

    Averaged over the rows sharing a short context x̄, the correction is 1 for every y when
    Q̂† is the exact induced model of Q† over those rows: the "mean 1" constraint that the
    paper says a correction built from the current Q tends to break.
    """
    check_pair(
        stale_log_probs,
        stale_induced_log_probs,
        name="stale_log_probs",
        target_name="stale_induced_log_probs",
    )
    with torch.no_grad():
        return torch.exp(stale_log_probs - stale_induced_log_probs)


def serialized_imm_loss(
    log_probs: torch.Tensor,
    target: torch.Tensor,
    correction: torch.Tensor,
    reduction: str = "mean",
) -> torch.Tensor:
    """ĨMM_t(Q) = −Σ_y correction(y) P̂(y | x̄_t) log Q(y | x_t), Algorithm 2, line 14.

    This is *not* the IMM risk; only its gradient matters, and that gradient averages
    over the dataset to the IMM gradient (Eq. (13)). The correction is detached.

    Args:
        log_probs: ``[B, C]``, log Q(y | x_t) of the model being trained.
        target: ``[B, C]``, P̂(y | x̄_t).
        correction: ``[B, C]``, from :func:`serialized_correction`.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (``[B]``).
    """
    check_pair(log_probs, target)
    check_rows(correction, "correction", *log_probs.shape)
    check_reduction(reduction)
    return reduce(cross_entropy(correction.detach() * target, log_probs), reduction)


class StaleSnapshot:
    """A frozen copy Q† of a module, refreshed every ``refresh_every`` steps (Algorithm 2, line 5).

    The correction of Eq. (13) must come from this stale Q†, not from the model being
    trained: the paper reports that using the current Q destabilizes training, likely
    because the correction then stops averaging to 1 for every y. When
    :meth:`maybe_refresh` returns ``True`` the caller recomputes its induced Q̂† from the
    new snapshot (Algorithm 2, lines 6–11); that part is domain-specific.

    Args:
        refresh_every: r ≥ 1; a snapshot is taken at the steps divisible by r (and at the
            first call, whatever its step).
    """

    def __init__(self, refresh_every: int) -> None:
        checks.integer("refresh_every", refresh_every, 1)
        self.refresh_every = refresh_every
        self.module: torch.nn.Module | None = None

    def maybe_refresh(self, module: torch.nn.Module, step: int) -> bool:
        """Snapshots ``module`` if none is held or ``step % refresh_every == 0``; says if it did."""
        if self.module is not None and step % self.refresh_every != 0:
            return False
        snapshot = copy.deepcopy(module)
        snapshot.requires_grad_(False)
        snapshot.eval()
        self.module = snapshot
        return True

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Runs the snapshot under ``torch.no_grad()``."""
        if self.module is None:
            raise RuntimeError("StaleSnapshot has no snapshot yet: call maybe_refresh first")
        with torch.no_grad():
            return self.module(*args, **kwargs)
