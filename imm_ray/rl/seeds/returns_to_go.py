"""The learner connector that turns per-seed trajectories into REINFORCE's train batch.

Returns-to-go G_t = Σ_{t' ≥ t} γ^{t'−t} r_{t'} within each trajectory (paper App. D.3:
discounted reward-to-go, no baseline) are one matrix product per batch of trajectories:
``G = R Γ`` with ``Γ[t', t] = γ^{t'−t}`` for ``t' ≥ t`` and 0 otherwise. An episode that
terminates at step τ has rewards 0 after τ (:class:`SeedTrajectories`), so its G_t stops
at termination; its steps after τ are left out of the loss by ``LOSS_MASK``.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns

from imm_ray.rl.seeds.tensor_env_runner import SeedTrajectories


@functools.lru_cache(maxsize=16)
def _discount_matrix(
    steps: int, gamma: float, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """``Γ [T, T]``, built once per length: every epoch of a run reuses it."""
    time = torch.arange(steps, dtype=dtype, device=device)
    lag = time.unsqueeze(1) - time.unsqueeze(0)  # [t', t] = t' − t
    return torch.where(lag >= 0, gamma ** lag.clamp(min=0), torch.zeros_like(lag))


def discounted_returns_to_go(rewards: torch.Tensor, gamma: float) -> torch.Tensor:
    """``G[..., t] = Σ_{t' ≥ t} γ^{t'−t} rewards[..., t']`` over the last (time) axis."""
    return rewards @ _discount_matrix(rewards.shape[-1], gamma, rewards.dtype, rewards.device)


class SeedReturnsToGo(ConnectorV2):
    """Learner connector: :class:`SeedTrajectories` → ``{OBS, ACTIONS, RETURNS_TO_GO}``,
    plus ``LOSS_MASK [S, T]`` (the steps each seed's episode took) on pairs that terminate.

    Several trajectories per seed are joined along the time axis after each has its own
    returns-to-go, so G never leaks across a trajectory boundary. The batch lands on
    ``device`` (the learner's).
    """

    def __init__(
        self,
        input_observation_space: Any = None,
        input_action_space: Any = None,
        *,
        gamma: float,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__(input_observation_space, input_action_space)
        self.gamma = gamma
        self.device = device

    def __call__(
        self,
        *,
        rl_module: Any,
        batch: dict[str, Any],
        episodes: list[SeedTrajectories],
        **kwargs: Any,
    ) -> dict[str, Any]:
        if not episodes or not all(isinstance(e, SeedTrajectories) for e in episodes):
            raise ValueError(f"SeedReturnsToGo needs SeedTrajectories, got {episodes!r:.200}")
        returns = [discounted_returns_to_go(e.rewards, self.gamma) for e in episodes]
        columns = {
            Columns.OBS: torch.cat([e.obs for e in episodes], dim=1),
            Columns.ACTIONS: torch.cat([e.actions for e in episodes], dim=1),
            Columns.RETURNS_TO_GO: torch.cat(returns, dim=1),
        }
        masks = [e.alive for e in episodes]
        if any(m is not None for m in masks):
            columns[Columns.LOSS_MASK] = torch.cat(
                [
                    torch.ones_like(e.actions, dtype=torch.bool) if m is None else m
                    for e, m in zip(episodes, masks, strict=True)
                ],
                dim=1,
            )
        batch[DEFAULT_MODULE_ID] = {k: v.to(self.device) for k, v in columns.items()}
        return batch
