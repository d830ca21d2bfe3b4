"""The env runner of the single-seed RLlib path: every trajectory gets a start of its own.

RLlib 2.60's ``SingleAgentEnvRunner.sample(num_episodes=...)`` marks the env for an
"initial" reset on its next call, and an initial reset re-seeds the env with the same
worker seed (``config.seed + worker_index``). REINFORCE samples one episode per
``train()``, so with a seed set every training trajectory started in the same cell: one
start state instead of the env's start distribution (uniform on the grid).

:class:`TrajectorySeededEnvRunner` keeps RLlib's runner and replaces only that seed: the
k-th seeded reset of sub-env i on worker w is seeded from
``SeedSequence([seed, START_STREAM, w, k, i])``. Starts are then independent draws from
the env's reset distribution, and still reproducible per (seed, trajectory).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner
from ray.rllib.utils.typing import StateDict

from imm_ray.rl.shared import ExtraStateMixin, RestoresWeightsMixin
from imm_ray.rl.streams import START_STREAM, stream_seed

#: State key: how many seeded resets this runner has made.
NUM_SEEDED_RESETS = "num_seeded_resets"


class TrajectorySeededEnvRunner(RestoresWeightsMixin, ExtraStateMixin, SingleAgentEnvRunner):
    """``SingleAgentEnvRunner`` whose forced resets draw fresh, reproducible start seeds."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._seeded_resets = 0
        super().__init__(*args, **kwargs)

    def _try_env_reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            # RLlib passes its fixed worker seed here on every forced reset.
            worker = self.worker_index or 0
            seed = [
                stream_seed(self.config.seed, START_STREAM, worker, self._seeded_resets, i)
                for i in range(self.num_envs)
            ]
            self._seeded_resets += 1
        return super()._try_env_reset(seed=seed, options=options)

    def _add_extra_state(self, state: StateDict, asked: Callable[[str], bool]) -> None:
        state[NUM_SEEDED_RESETS] = self._seeded_resets

    def _set_extra_state(self, state: StateDict) -> None:
        if NUM_SEEDED_RESETS in state:
            self._seeded_resets = int(state[NUM_SEEDED_RESETS])
