"""The default REINFORCE network: one-hot state encoding → tanh MLP → action logits.

The paper's policy (App. D.3 and its public code) is one-hot(121) → 32 tanh → 4. A grid
observation ``(x, y)`` arrives as a ``MultiDiscrete`` vector, so the encoder one-hots the
*joint* index ``x · n_y + y`` rather than each coordinate separately: a tabular-capable
input, which is what makes the MDP policy strictly more expressive than the POMDP one.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis.value_function_api import ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from torch import nn

#: Defaults of ``model_config``; the paper's network.
DEFAULT_MODEL_CONFIG: dict[str, Any] = {
    "hidden": [32],
    "activation": "tanh",
    "value_head": False,
}

_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


class JointOneHot(nn.Module):
    """Encodes ``Discrete`` / ``MultiDiscrete`` observations as a one-hot of the joint index.

    ``Box`` observations are flattened and passed through unchanged.
    """

    def __init__(self, space: gym.Space) -> None:
        super().__init__()
        if isinstance(space, gym.spaces.Discrete):
            nvec = np.array([space.n])
        elif isinstance(space, gym.spaces.MultiDiscrete):
            nvec = np.asarray(space.nvec).reshape(-1)
        elif isinstance(space, gym.spaces.Box):
            nvec = None
        else:
            raise ValueError(
                f"observation_space must be Discrete, MultiDiscrete or Box, got {space}"
            )
        self.discrete = nvec is not None
        if self.discrete:
            # Row-major strides so that (x, y) ↦ x·n_y + y, matching the pair's state ids.
            strides = np.cumprod(np.concatenate([[1], nvec[::-1][:-1]]))[::-1].copy()
            self.register_buffer("strides", torch.as_tensor(strides, dtype=torch.long))
            self.out_dim = int(np.prod(nvec))
        else:
            self.out_dim = int(np.prod(space.shape))

    def index(self, obs: torch.Tensor, batch_dims: int = 1) -> torch.Tensor:
        """The joint index ``Σᵢ obsᵢ · strideᵢ`` of discrete observations whose first
        ``batch_dims`` axes are batch axes; shape ``obs.shape[:batch_dims]``."""
        if not self.discrete:
            raise ValueError("index() needs a Discrete or MultiDiscrete observation space")
        return (obs.long().reshape(*obs.shape[:batch_dims], -1) * self.strides).sum(-1)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if not self.discrete:
            return obs.reshape(obs.shape[0], -1).float()
        return nn.functional.one_hot(self.index(obs), self.out_dim).float()


def model_settings(module: TorchRLModule, activations: Collection[str]) -> dict[str, Any]:
    """``module``'s ``model_config`` over :data:`DEFAULT_MODEL_CONFIG`, checked: its
    ``activation`` is one of ``activations`` and its action space is ``Discrete``."""
    cfg = {**DEFAULT_MODEL_CONFIG, **(module.model_config or {})}
    if cfg["activation"] not in activations:
        raise ValueError(
            f"model_config.activation must be one of {sorted(activations)}, "
            f"got {cfg['activation']!r}"
        )
    if not isinstance(module.action_space, gym.spaces.Discrete):
        raise ValueError(f"action_space must be Discrete, got {module.action_space}")
    return cfg


def _mlp(sizes: list[int], activation: type[nn.Module]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


class DefaultReinforceRLModule(TorchRLModule, ValueFunctionAPI):
    """Categorical policy over a one-hot state encoding.

    ``model_config`` keys: ``hidden`` (list of widths, default ``[32]``), ``activation``
    (``"tanh"`` or ``"relu"``), ``value_head`` (build a separate value MLP so actor-critic
    learners such as PPO can use the same network; REINFORCE leaves it off).
    """

    def setup(self) -> None:
        cfg = model_settings(self, _ACTIVATIONS)
        activation = _ACTIVATIONS[cfg["activation"]]
        self.encoder = JointOneHot(self.observation_space)
        hidden = [int(h) for h in cfg["hidden"]]
        self.pi = _mlp([self.encoder.out_dim, *hidden, int(self.action_space.n)], activation)
        self.vf = (
            _mlp([self.encoder.out_dim, *hidden, 1], activation)
            if cfg["value_head"] and not self.inference_only
            else None
        )

    def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        return {Columns.ACTION_DIST_INPUTS: self.pi(self.encoder(batch[Columns.OBS]))}

    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        if self.vf is None:
            raise ValueError(
                "this module has no value head; build it with model_config={'value_head': True}"
            )
        return self.vf(self.encoder(batch[Columns.OBS])).squeeze(-1)
