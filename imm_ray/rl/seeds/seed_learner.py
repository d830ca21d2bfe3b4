"""The seed-vectorized REINFORCE + IMM learner: the sum over seeds of each seed's own loss.

For seed s with trajectory (x_t, a_t, G_t), t < T:

    L_s = −(1/T) Σ_t log π_s(a_t | x_t) · G_t  +  λ · IMM_s,
    IMM_s = (1/T) Σ_t −Σ_a P̂(a | x̄_t) log Q̂_s(a | x̄_t)       (paper Eq. 8, 9),

and the learner minimizes Σ_s L_s. Seed s's parameters appear in L_s only, Adam is
elementwise and nothing is clipped or normalized across seeds, so every seed takes exactly
the step it would take alone. Q̂_s(a | x̄) = Σ_i w_i π_s(a | x̃_i) / Σ_i w_i over every
extended state x̃_i of x̄ (the exact induced model, Eq. 6). Since IMM_s depends on x_t only
through its context, it is computed once per context and weighted by the share of the
trajectory's steps spent there: IMM_s = Σ_x̄ (n_s(x̄) / T) · risk_s(x̄).
"""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.utils.typing import ModuleID, TensorType

from imm_ray.imm import imm_loss
from imm_ray.rl.imm_learner import IMM_LAMBDA_KEY, IMM_LOSS_KEY
from imm_ray.rl.reinforce_torch_learner import POLICY_LOSS_KEY
from imm_ray.rl.seeds.batched_module import LOGITS_TABLE
from imm_ray.rl.seeds.returns_to_go import SeedReturnsToGo


class SeedReinforceTorchLearner(TorchLearner):
    """REINFORCE + λ·IMM for every seed of a :class:`BatchedReinforceRLModule` at once.

    Logged per module (means over seeds): ``policy_loss``, ``imm_loss``, ``imm_lambda``.
    """

    def build(self) -> None:
        super().build()
        self._learner_connector.prepend(
            SeedReturnsToGo(gamma=self.config.gamma, device=self._device)
        )
        self._imm_tables: dict[str, torch.Tensor] | None = None
        if not self.config.imm_enabled:
            return
        pair = self.config.imm_pair()
        states, weights = pair.extension_table
        as_tensor = lambda a, dtype: torch.as_tensor(a, dtype=dtype, device=self._device)  # noqa: E731
        self._imm_pair = pair
        self._imm_tables = {
            "target": as_tensor(self.config.imm_target_table(pair), torch.float32),
            "state_context": as_tensor(pair.state_context(), torch.long),
            "member_obs": as_tensor(pair.state_observation()[states], None),
            "member_weights": as_tensor(weights, torch.float32),
        }

    def compute_loss_for_module(
        self,
        *,
        module_id: ModuleID,
        config: Any,
        batch: dict[str, Any],
        fwd_out: dict[str, TensorType],
    ) -> TensorType:
        module = self.module[module_id].unwrapped()
        dist = module.get_train_action_dist_cls().from_logits(fwd_out[Columns.ACTION_DIST_INPUTS])
        log_probs = dist.logp(batch[Columns.ACTIONS])
        policy = -(log_probs * batch[Columns.RETURNS_TO_GO]).mean(dim=-1)
        loss = policy.sum()
        self.metrics.log_value((module_id, POLICY_LOSS_KEY), policy.detach().mean(), window=1)
        if self._imm_tables is None or config.imm_lambda == 0:
            return loss
        imm = self.compute_imm_risk(module_id, batch, fwd_out)
        self.metrics.log_value((module_id, IMM_LOSS_KEY), imm.detach().mean(), window=1)
        self.metrics.log_value((module_id, IMM_LAMBDA_KEY), config.imm_lambda, window=1)
        return loss + config.imm_lambda * imm.sum()

    def compute_imm_risk(
        self,
        module_id: ModuleID,
        batch: dict[str, Any],
        fwd_out: dict[str, TensorType] | None = None,
    ) -> torch.Tensor:
        """IMM_s of each seed, ``[S]``: the mean over the batch's observations
        ``[S, N, *obs_shape]`` of the IMM risk (Eq. 9) of their contexts under seed s."""
        tables = self._imm_tables
        if tables is None:
            raise ValueError("IMM is off for this learner (imm_target is None or imm_lambda is 0)")
        module = self.module[module_id].unwrapped()
        if fwd_out is None:
            fwd_out = module.forward_train(batch)
        log_probs = torch.log_softmax(fwd_out[LOGITS_TABLE], dim=1)  # [S, A, n_inputs]
        contexts, width = tables["member_weights"].shape
        seeds, actions, _ = log_probs.shape
        member_obs = tables["member_obs"].reshape(1, contexts * width, -1)
        members = log_probs[:, :, module.input_index(member_obs)[0]]  # [S, A, C·K]
        risk = imm_loss(
            members.transpose(1, 2).reshape(seeds * contexts, width, actions),
            tables["target"].repeat(seeds, 1),
            tables["member_weights"].repeat(seeds, 1),
            reduction="none",
        ).reshape(seeds, contexts)
        obs = batch[Columns.OBS]
        visited = tables["state_context"][self._imm_pair.observation_state(obs)]  # [S, N]
        share = torch.zeros(seeds, contexts, device=risk.device).scatter_add_(
            1, visited, torch.full(visited.shape, 1.0 / visited.shape[1], device=risk.device)
        )
        return (share * risk).sum(dim=-1)
