"""The seed-vectorized REINFORCE + IMM learner: the sum over seeds of each seed's own loss.

For seed s with trajectory (x_t, a_t, G_t), t < T_s:

    L_s = −(1/T_s) Σ_t log π_s(a_t | x_t) · G_t  +  λ · IMM_s,
    IMM_s = (1/T_s) Σ_t −Σ_a P̂(a | x̄_t) log Q̂_s(a | x̄_t)       (paper Eq. 8, 9),

where T_s is the number of steps seed s's episode took: the batch's length T on a
continuing task (the grid), fewer where the episode terminated (Taxi; the batch's
``LOSS_MASK`` marks them). Each seed's mean is over its own steps, as the single-seed
path's mean over its batch of complete episodes is.

The learner minimizes Σ_s L_s. Seed s's parameters appear in L_s only, Adam is
elementwise and nothing is clipped or normalized across seeds, so every seed takes exactly
the step it would take alone. Q̂_s(a | x̄) = Σ_i w_i π_s(a | x̃_i) / Σ_i w_i over every
extended state x̃_i of x̄ (the exact induced model, Eq. 6). Since IMM_s depends on x_t only
through its context, it is computed once per context and weighted by the share of the
trajectory's steps spent there: IMM_s = Σ_x̄ (n_s(x̄) / T_s) · risk_s(x̄).

With ``imm_num_samples = k`` the induced model is sampled instead (Eq. 12): every step t
of seed s draws k extended states from the belief π(x̃ | x̄_t) with uniforms from seed s's
own stream, so a seed's draws never depend on the seeds beside it.

With λ groups (``SeedReinforceConfig.imm(lam=[...])``) the "seeds" above are runs: run r
is seed ``run_seeds[r]`` under its own λ_r, and a run at λ_r = 0 takes exactly the step it
would take without IMM.

A run whose loss becomes non-finite is marked failed: its term leaves the summed loss
(so it cannot poison the others through the optimizer), and :meth:`failed_runs` reports
it, with the epoch, for the algorithm to turn its results into NaN.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.utils.typing import ModuleID, StateDict, TensorType

from imm_ray.checks import fail
from imm_ray.imm import imm_loss
from imm_ray.rl.imm_learner import IMM_LAMBDA_KEY, IMM_LOSS_KEY
from imm_ray.rl.reinforce_torch_learner import POLICY_LOSS_KEY
from imm_ray.rl.seeds.batched_module import LOGITS_TABLE
from imm_ray.rl.seeds.eager_adam import make_adam
from imm_ray.rl.seeds.returns_to_go import SeedReturnsToGo
from imm_ray.rl.shared import (
    ExtraStateMixin,
    RestoresWeightsMixin,
    imm_tables,
    reinforce_loss,
)
from imm_ray.rl.streams import IMM_STREAM, SeedStreams, inverse_cdf

#: Metric key: how many seeds have failed (non-finite loss) so far.
NUM_FAILED_SEEDS_KEY = "num_failed_seeds"
#: Checkpoint component: which seeds failed when, and the sampled extension's streams.
SEED_STATE = "seed_state"


class SeedReinforceTorchLearner(RestoresWeightsMixin, ExtraStateMixin, TorchLearner):
    """REINFORCE + λ·IMM for every seed of a :class:`BatchedReinforceRLModule` at once.

    Logged per module: ``policy_loss`` and ``imm_loss`` (means over the runs that have not
    failed), ``imm_lambda`` (the mean over runs), ``num_failed_seeds`` (failed runs), and
    RLlib's own ``total_loss``, the minimized sum over runs of ``policy_loss + λ · imm_loss``.
    """

    def build(self) -> None:
        super().build()
        self._learner_connector.prepend(
            SeedReturnsToGo(gamma=self.config.gamma, device=self._device)
        )
        runs = self.config.run_seeds
        self._failed_at = torch.zeros(len(runs), dtype=torch.long)  # 0: not failed
        self._updates = 0
        self._imm_tables: dict[str, torch.Tensor] | None = None
        lams = self.config.run_lambdas
        self._lam = torch.tensor(lams, dtype=torch.float32, device=self._device)
        self._imm_on = self._lam != 0
        if not self.config.imm_enabled:
            return
        self._imm_pair, tables = imm_tables(self.config, self._device)
        tables["ext_obs"] = tables["state_obs"][tables["ext_states"]]
        tables["ext_cdf"] = tables["ext_weights"].cumsum(dim=-1)
        self._imm_tables = tables
        if self.config.imm_num_samples is not None:
            self._imm_streams = SeedStreams(runs, IMM_STREAM)

    def configure_optimizers_for_module(self, module_id: ModuleID, config: Any = None) -> None:
        """RLlib's default, Adam at ``config.lr``, as :class:`EagerAdam` where torch is the
        version it was tested on: the same updates, without importing ``torch._dynamo``
        (≈ 1.3 s of every trial's start-up); elsewhere a plain ``torch.optim.Adam``."""
        params = self.get_parameters(self._module[module_id])
        self.register_optimizer(
            module_id=module_id,
            optimizer=make_adam(params),
            params=params,
            lr_or_lr_schedule=config.lr,
        )

    def set_lambdas(self, lams: Sequence[float]) -> None:
        """Sets every run's λ from now on (``[G·S]``, in the order of ``config.run_seeds``):
        what population-based training changes mid-training. A run at λ = 0 takes plain
        REINFORCE steps; λ > 0 needs the IMM tables, built when the learner was (its config
        had IMM on)."""
        lam = torch.tensor([float(x) for x in lams], dtype=torch.float32, device=self._device)
        if lam.shape != self._lam.shape or not bool(torch.isfinite(lam).all() & (lam >= 0).all()):
            fail("lambdas", list(lams), f"{self._lam.numel()} finite numbers >= 0, one per run")
        if self._imm_tables is None and bool((lam != 0).any()):
            raise ValueError("λ > 0 needs a learner built with IMM on (imm_target and λ > 0)")
        self._lam = lam
        self._imm_on = lam != 0

    def lambdas(self) -> list[float]:
        """Every run's λ now, in the order of ``config.run_seeds``."""
        return self._lam.tolist()

    def failed_runs(self) -> dict[int, int]:
        """``{run: epoch}`` of every run whose loss became non-finite, at the epoch it did
        (a run indexes ``config.run_seeds``: without λ groups, the seed's index)."""
        return {run: int(epoch) for run, epoch in enumerate(self._failed_at.tolist()) if epoch > 0}

    def _add_extra_state(self, state: StateDict, asked: Callable[[str], bool]) -> None:
        # Not in the per-epoch weight sync, which asks for the RL module alone.
        if asked(SEED_STATE):
            streams = getattr(self, "_imm_streams", None)
            state[SEED_STATE] = {
                "failed_at": self._failed_at.clone(),
                "updates": self._updates,
                "imm_streams": None if streams is None else streams.get_state(),
            }

    def _set_extra_state(self, state: StateDict) -> None:
        if SEED_STATE in state:
            seed_state = state[SEED_STATE]
            self._failed_at = seed_state["failed_at"].clone()
            self._updates = seed_state["updates"]
            if seed_state["imm_streams"] is not None:
                self._imm_streams.set_state(seed_state["imm_streams"])

    def compute_loss_for_module(
        self,
        *,
        module_id: ModuleID,
        config: Any,
        batch: dict[str, Any],
        fwd_out: dict[str, TensorType],
    ) -> TensorType:
        policy = reinforce_loss(
            self.module[module_id].unwrapped(),
            batch,
            fwd_out,
            lambda terms: _seed_mean(terms, batch),
        )
        imm = None
        total = policy
        if self._imm_tables is not None and bool(self._imm_on.any()):
            imm = self.compute_imm_risk(module_id, batch, fwd_out)
            # A run at λ = 0 keeps its plain REINFORCE loss, as it has when trained alone.
            total = torch.where(self._imm_on, policy + self._lam * imm, policy)
        self._updates += 1
        newly_failed = ~torch.isfinite(total.detach()).cpu() & (self._failed_at == 0)
        self._failed_at[newly_failed] = self._updates
        ok = (self._failed_at == 0).to(total.device)
        # RLlib's Learner logs TOTAL_LOSS_KEY itself: the returned sum over seeds.
        for key, value in ((POLICY_LOSS_KEY, policy), (IMM_LOSS_KEY, imm)):
            if value is not None:
                self.metrics.log_value((module_id, key), value.detach()[ok].mean(), window=1)
        if imm is not None:
            self.metrics.log_value((module_id, IMM_LAMBDA_KEY), float(self._lam.mean()), window=1)
        self.metrics.log_value(
            (module_id, NUM_FAILED_SEEDS_KEY), int((self._failed_at > 0).sum()), window=1
        )
        # A failed seed's term is dropped: its own weights stop mattering, the others'
        # gradients never see its NaN.
        return torch.where(ok, total, torch.zeros_like(total)).sum()

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
        visited = tables["state_context"][self._imm_pair.observation_state(batch[Columns.OBS])]
        if self.config.imm_num_samples is not None:
            return _seed_mean(self._sampled_imm_risk(module, log_probs, visited), batch)
        contexts, width = tables["ext_weights"].shape
        seeds, actions, _ = log_probs.shape
        member_obs = tables["ext_obs"].reshape(1, contexts * width, -1)
        members = log_probs[:, :, module.input_index(member_obs)[0]]  # [S, A, C·K]
        risk = imm_loss(
            members.transpose(1, 2).reshape(seeds * contexts, width, actions),
            tables["target"].repeat(seeds, 1),
            tables["ext_weights"].repeat(seeds, 1),
            reduction="none",
        ).reshape(seeds, contexts)
        if Columns.LOSS_MASK in batch:
            mask = batch[Columns.LOSS_MASK].to(risk.dtype)
            per_step = mask / mask.sum(dim=-1, keepdim=True)
        else:
            per_step = torch.full(visited.shape, 1.0 / visited.shape[1], device=risk.device)
        share = torch.zeros(seeds, contexts, device=risk.device).scatter_add_(1, visited, per_step)
        return (share * risk).sum(dim=-1)

    def _sampled_imm_risk(
        self, module: Any, log_probs: torch.Tensor, visited: torch.Tensor
    ) -> torch.Tensor:
        """Eq. (12) per seed and step, ``[S, T]``: k members per step drawn from the belief,
        equal weights."""
        tables = self._imm_tables
        k = self.config.imm_num_samples
        seeds, actions, _ = log_probs.shape
        steps = visited.shape[1]
        u = self._imm_streams.uniform(steps, k).to(log_probs.device)  # [S, T, k]
        cdf = tables["ext_cdf"][visited].unsqueeze(2).expand(-1, -1, k, -1)
        slot = inverse_cdf(cdf.contiguous(), u)  # [S, T, k] index into the support
        states = tables["ext_states"][visited].gather(2, slot)
        inputs = module.input_index(tables["state_obs"][states].reshape(seeds, steps * k, -1))
        members = log_probs.gather(2, inputs.unsqueeze(1).expand(-1, actions, -1))
        risk = imm_loss(
            members.transpose(1, 2).reshape(seeds * steps, k, actions),
            tables["target"][visited].reshape(seeds * steps, actions),
            reduction="none",
        ).reshape(seeds, steps)
        return risk


def _seed_mean(values: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
    """``[S, T]`` → ``[S]``: each seed's mean over the steps its episode took."""
    if Columns.LOSS_MASK not in batch:
        return values.mean(dim=-1)
    mask = batch[Columns.LOSS_MASK]
    return torch.where(mask, values, torch.zeros_like(values)).sum(dim=-1) / mask.sum(dim=-1)
