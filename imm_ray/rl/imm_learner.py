"""``IMMLearnerMixin``: adds λ·IMM(Q) to any RLlib torch learner's loss.

On RLlib's new API stack a "loss mixin" is a Learner mixin that overrides
``compute_loss_for_module``, calls ``super()`` for the algorithm's own loss and adds its
term. For every observation in the train batch the mixin

1. projects it to its restricted context x̄ (the POMDP's observation, e.g. the grid's x),
2. extends x̄ to full observations x̃ᵢ with weights wᵢ = π(x̃ᵢ | x̄) — every state in the
   belief's support (exact, Eq. 6) or k samples from it (Eq. 12),
3. runs the learner's own RLModule on them and matches the induced policy
   Q̂(a | x̄) = Σᵢ wᵢ Q(a | x̃ᵢ) / Σᵢ wᵢ against the restricted target P̂(a | x̄) with the
   IMM risk −Σ_a P̂ log Q̂ (Eq. 9), added with weight λ (Eq. 8).

It reads its settings from :class:`~imm_ray.rl.imm_config.IMMConfigMixin` fields.
"""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.core.columns import Columns
from ray.rllib.utils.typing import ModuleID, TensorType

from imm_ray.imm import imm_loss
from imm_ray.rl.shared import imm_tables

#: Metric keys (logged per module under the learner results).
IMM_LOSS_KEY = "imm_loss"
IMM_LAMBDA_KEY = "imm_lambda"
TOTAL_LOSS_KEY = "total_loss"


class IMMLearnerMixin:
    """Mix in before an RLlib ``TorchLearner``: ``class X(IMMLearnerMixin, PPOTorchLearner)``."""

    def build(self) -> None:
        super().build()
        self._imm_tables: dict[str, torch.Tensor] | None = None
        if not self.config.imm_enabled:
            return
        self._imm_pair, self._imm_tables = imm_tables(self.config, self._device)
        self._imm_tables["belief"] = torch.as_tensor(
            self._imm_pair.context_belief(), dtype=torch.float32, device=self._device
        )

    def compute_loss_for_module(
        self,
        *,
        module_id: ModuleID,
        config: Any,
        batch: dict[str, Any],
        fwd_out: dict[str, TensorType],
    ) -> TensorType:
        loss = super().compute_loss_for_module(
            module_id=module_id, config=config, batch=batch, fwd_out=fwd_out
        )
        if self._imm_tables is None or config.imm_lambda == 0:
            return loss
        imm = self.compute_imm_risk(module_id, batch, config.imm_num_samples)
        total = loss + config.imm_lambda * imm
        self.metrics.log_value((module_id, IMM_LOSS_KEY), imm.detach(), window=1)
        self.metrics.log_value((module_id, IMM_LAMBDA_KEY), config.imm_lambda, window=1)
        self.metrics.log_value((module_id, TOTAL_LOSS_KEY), total.detach(), window=1)
        return total

    def compute_imm_risk(
        self, module_id: ModuleID, batch: dict[str, Any], num_samples: int | None
    ) -> torch.Tensor:
        """The IMM risk (Eq. 9) of the batch's observations under module ``module_id``."""
        tables = self._imm_tables
        obs = batch[Columns.OBS]
        if Columns.LOSS_MASK in batch:
            # Learners that pad episodes (PPO's extra bootstrap step) mark the padding here.
            obs = obs[batch[Columns.LOSS_MASK].bool()]
        contexts = tables["state_context"][self._imm_pair.observation_state(obs)]
        if num_samples is None:
            members = tables["ext_states"][contexts]
            weights = tables["ext_weights"][contexts]
        else:
            members = torch.multinomial(tables["belief"][contexts], num_samples, replacement=True)
            weights = None
        rows, k = members.shape
        member_obs = tables["state_obs"][members.reshape(-1)]
        out = self.module[module_id].forward_train({Columns.OBS: member_obs})
        logits = out[Columns.ACTION_DIST_INPUTS].reshape(rows, k, -1)
        return imm_loss(torch.log_softmax(logits, dim=-1), tables["target"][contexts], weights)
