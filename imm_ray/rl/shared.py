"""What the single-seed (:mod:`imm_ray.rl`) and seed-vectorized (:mod:`imm_ray.rl.seeds`)
REINFORCE paths share: the paper's config defaults and their checks, the REINFORCE loss,
the IMM tables, and the learner/runner state added to RLlib's checkpoints.

Each path calls these instead of keeping its own copy, so the two compute the same thing
with the same operations in the same order.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import torch
from ray.rllib.core import COMPONENT_RL_MODULE
from ray.rllib.core.columns import Columns
from ray.rllib.utils.metrics import WEIGHTS_SEQ_NO
from ray.rllib.utils.typing import StateDict

import envs
from envs import PomdpMdpPair
from imm_ray.checks import fail


def set_paper_defaults(config: Any) -> None:
    """The paper's RL setting (App. D.3) on an ``AlgorithmConfig``: the grid MDP, Adam at
    lr 1e-2, γ = 0.9, sampling on the local EnvRunner."""
    config.environment(env=envs.MDP_ENV_ID)
    config.lr = 1e-2
    config.gamma = 0.9
    config.num_env_runners = 0


def check_lr_and_gamma(config: Any) -> None:
    """Fails unless ``config.lr > 0`` (a schedule is RLlib's to check) and γ ∈ [0, 1]."""
    if isinstance(config.lr, int | float) and not config.lr > 0:
        fail("lr", config.lr, "> 0")
    if not 0.0 <= config.gamma <= 1.0:
        fail("gamma", config.gamma, "in [0, 1]")


def reinforce_loss(
    module: Any,
    batch: dict[str, Any],
    fwd_out: dict[str, Any],
    mean: Callable[[torch.Tensor], torch.Tensor] = torch.mean,
) -> torch.Tensor:
    """REINFORCE's policy-gradient loss −mean(log π(a|s) · G_t), no baseline.

    ``mean`` reduces the per-step terms: over the whole batch (the single-seed path) or over
    each seed's own steps (the seed-vectorized path, ``[S, T]`` → ``[S]``).
    """
    dist = module.get_train_action_dist_cls().from_logits(fwd_out[Columns.ACTION_DIST_INPUTS])
    log_probs = dist.logp(batch[Columns.ACTIONS])
    return -mean(log_probs * batch[Columns.RETURNS_TO_GO])


def imm_tables(config: Any, device: Any) -> tuple[PomdpMdpPair, dict[str, torch.Tensor]]:
    """The IMM pair of ``config`` (an :class:`~imm_ray.rl.imm_config.IMMConfigMixin`) and
    its tables as tensors on ``device``:

    - ``target`` ``[C, A]``: the restricted target P̂(a | x̄) of every context;
    - ``state_context`` ``[N]``: every full state's context x̄;
    - ``state_obs`` ``[N, *obs_shape]``: every full state's observation;
    - ``ext_states``, ``ext_weights`` ``[C, K]``: each context's extended states x̃ᵢ and
      their weights π(x̃ᵢ | x̄) (the pair's ``extension_table``).
    """
    pair = config.imm_pair()
    states, weights = pair.extension_table
    as_tensor = lambda a, dtype: torch.as_tensor(a, dtype=dtype, device=device)  # noqa: E731
    return pair, {
        "target": as_tensor(config.imm_target_table(pair), torch.float32),
        "state_context": as_tensor(pair.state_context(), torch.long),
        "state_obs": as_tensor(pair.state_observation(), None),
        "ext_states": as_tensor(states, torch.long),
        "ext_weights": as_tensor(weights, torch.float32),
    }


class ExtraStateMixin:
    """Adds a learner's or env runner's own entries to RLlib's ``get_state`` /
    ``set_state``: mix in before the RLlib class and define the two hooks."""

    def get_state(
        self,
        components: str | Collection[str] | None = None,
        *,
        not_components: str | Collection[str] | None = None,
        **kwargs: Any,
    ) -> StateDict:
        state = super().get_state(components, not_components=not_components, **kwargs)
        self._add_extra_state(
            state, lambda name: self._check_component(name, components, not_components)
        )
        return state

    def set_state(self, state: StateDict) -> None:
        super().set_state(state)
        self._set_extra_state(state)

    def _add_extra_state(self, state: StateDict, asked: Callable[[str], bool]) -> None:
        """Adds this object's entries to ``state``; ``asked(name)`` says whether the caller
        asked for component ``name``."""
        raise NotImplementedError

    def _set_extra_state(self, state: StateDict) -> None:
        """Restores what :meth:`_add_extra_state` added, where ``state`` has it."""
        raise NotImplementedError


class RestoresWeightsMixin:
    """A learner or env runner that takes a state's module weights whatever its weight
    sequence number. Mix in before the RLlib class.

    RLlib's ``Learner.set_state`` and ``SingleAgentEnvRunner.set_state`` take the weights
    only when the state's number is newer than their own: right for a broadcast of new
    weights, wrong for a restore into a live algorithm, whose state may be older (an
    earlier checkpoint of its own) or as new (another population member's at the same
    epoch). The learner then took the optimizer's moments and kept its own weights, and
    the env runner kept sampling with the weights it had. Here every state that carries
    the module sets it, and the number becomes the state's."""

    def set_state(self, state: StateDict) -> None:
        seq_no = state.get(WEIGHTS_SEQ_NO, 0)
        if COMPONENT_RL_MODULE in state:
            state = {**state, WEIGHTS_SEQ_NO: 0}
        super().set_state(state)  # type: ignore[misc]
        if COMPONENT_RL_MODULE in state:
            self._weights_seq_no = seq_no
