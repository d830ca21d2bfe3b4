"""REINFORCE's torch learner: the policy-gradient loss −mean(log π(a|s) · G_t), no baseline.

Returns-to-go G_t = Σ_{t' ≥ t} γ^{t'−t} r_{t'} within each sampled trajectory are computed
by a learner connector prepended in :meth:`ReinforceTorchLearner.build`, not in the loss.
"""

from __future__ import annotations

from typing import Any

from ray.rllib.connectors.learner import ComputeReturnsToGo
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.utils.typing import ModuleID, TensorType

from imm_ray.rl.imm_learner import IMMLearnerMixin
from imm_ray.rl.shared import RestoresWeightsMixin, reinforce_loss

#: Metric key of the main (policy-gradient) loss.
POLICY_LOSS_KEY = "policy_loss"


class ReinforceTorchLearner(RestoresWeightsMixin, TorchLearner):
    """REINFORCE (Williams, 1992) with discounted reward-to-go weights (paper App. D.3)."""

    def build(self) -> None:
        super().build()
        if self.config.add_default_connectors_to_learner_pipeline:
            self._learner_connector.prepend(ComputeReturnsToGo(gamma=self.config.gamma))

    def compute_loss_for_module(
        self,
        *,
        module_id: ModuleID,
        config: Any,
        batch: dict[str, Any],
        fwd_out: dict[str, TensorType],
    ) -> TensorType:
        loss = reinforce_loss(self.module[module_id].unwrapped(), batch, fwd_out)
        self.metrics.log_value((module_id, POLICY_LOSS_KEY), loss.detach(), window=1)
        return loss


class IMMReinforceTorchLearner(IMMLearnerMixin, ReinforceTorchLearner):
    """REINFORCE plus λ·IMM (paper Eq. 8); with IMM off it is plain REINFORCE."""
