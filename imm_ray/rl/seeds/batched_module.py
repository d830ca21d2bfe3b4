"""S independent copies of the paper's policy network in one RLModule, one per seed.

Every parameter carries a leading seed axis (``W_l [S, fan_out, fan_in]``, ``b_l [S,
fan_out]``: ``nn.Linear``'s layout, stacked) and batches carry one too (observations
``[S, N, *obs_shape]`` → logits ``[S, N, A]``), so seed s's logits depend on seed s's
parameters only and a sum of per-seed losses has per-seed gradients. The input is the
one-hot of the observation's joint index (as in :class:`~imm_ray.rl.DefaultReinforceRLModule`),
so layer 1 at input i is the column ``W_1[:, i]``: the module tabulates the logits of every
input at once (:meth:`BatchedReinforceRLModule.logits_table`) and reads batches off it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.torch import TorchRLModule
from torch import nn

from imm_ray.rl.default_reinforce_rl_module import JointOneHot, model_settings

_ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu}

#: Forward-output key of :meth:`BatchedReinforceRLModule.logits_table`, ``[S, A, n_inputs]``.
LOGITS_TABLE = "logits_table"


def init_batched_mlp(
    seeds: Sequence[int], sizes: Sequence[int]
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Weights ``[S, fan_out, fan_in]`` and biases ``[S, fan_out]`` of an MLP with layer
    widths ``sizes``, one slice per seed.

    Seed s's slice holds exactly what ``torch.manual_seed(s)`` followed by building
    ``nn.Linear(sizes[0], sizes[1]), nn.Linear(sizes[1], sizes[2]), …`` in order would hold:
    U(−1/√fan_in, 1/√fan_in) from seed s's own generator. So a seed's initial weights do
    not depend on which other seeds share the module.
    """
    weights: list[list[torch.Tensor]] = [[] for _ in sizes[1:]]
    biases: list[list[torch.Tensor]] = [[] for _ in sizes[1:]]
    for seed in seeds:
        generator = torch.Generator().manual_seed(int(seed))
        for layer, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            weight = torch.empty(fan_out, fan_in)
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
            bias = torch.empty(fan_out)
            bound = 1.0 / math.sqrt(fan_in)
            nn.init.uniform_(bias, -bound, bound, generator=generator)
            weights[layer].append(weight)
            biases[layer].append(bias)
    return [torch.stack(w) for w in weights], [torch.stack(b) for b in biases]


class BatchedReinforceRLModule(TorchRLModule):
    """Categorical policies of S seeds over a one-hot state encoding.

    ``model_config`` keys: ``seeds`` (list of ints, required), ``hidden`` (widths, default
    ``[32]``), ``activation`` (``"tanh"`` or ``"relu"``).
    """

    def setup(self) -> None:
        cfg = model_settings(self, _ACTIVATIONS)
        self.encoder = JointOneHot(self.observation_space)
        if not self.encoder.discrete:
            raise ValueError(
                f"observation_space must be Discrete or MultiDiscrete, got {self.observation_space}"
            )
        if not cfg.get("seeds"):
            raise ValueError("model_config.seeds must be a non-empty list of seeds")
        self.seeds = [int(s) for s in cfg["seeds"]]
        self.activation = _ACTIVATIONS[cfg["activation"]]
        sizes = [self.encoder.out_dim, *(int(h) for h in cfg["hidden"]), int(self.action_space.n)]
        weights, biases = init_batched_mlp(self.seeds, sizes)
        self.weights = nn.ParameterList(nn.Parameter(w) for w in weights)
        self.biases = nn.ParameterList(nn.Parameter(b) for b in biases)

    def logits_table(self) -> torch.Tensor:
        """``[S, A, n_inputs]``: every seed's logits at every one-hot input.

        Layer 1 at input i is ``W_1[:, :, i] + b_1`` (``W_1`` times one-hot(i) selects
        column i); the later layers are batched matmuls over the seed axis. Actions come
        before inputs because on CPU a softmax along a 4-wide last axis is ~8× slower.
        """
        hidden = self.weights[0] + self.biases[0].unsqueeze(-1)
        for weight, bias in zip(self.weights[1:], self.biases[1:], strict=True):
            hidden = torch.baddbmm(bias.unsqueeze(-1), weight, self.activation(hidden))
        return hidden

    def input_index(self, obs: torch.Tensor) -> torch.Tensor:
        """The one-hot input of each observation: ``[S, N, *obs_shape]`` → ``[S, N]``."""
        return self.encoder.index(obs, batch_dims=2)

    def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        """Observations ``[S, N, *obs_shape]`` → ``ACTION_DIST_INPUTS`` ``[S, N, A]``, plus
        the whole table under ``LOGITS_TABLE`` (learners read the IMM members off it)."""
        index = self.input_index(batch[Columns.OBS])
        table = self.logits_table()
        logits = table.gather(2, index.unsqueeze(1).expand(-1, table.shape[1], -1))
        return {Columns.ACTION_DIST_INPUTS: logits.transpose(1, 2), LOGITS_TABLE: table}
