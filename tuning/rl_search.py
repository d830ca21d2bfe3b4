"""The RL search trial: one IMM setting's seeds, side by side on the seed-vectorized path,
at the λ a search gives it, evaluated at every evaluation point.

:class:`RLSearchTrainable` is a Tune class trainable, so that population-based training
can change λ mid-training: every evaluation point is a step and a checkpoint, a checkpoint
holds the algorithm's whole state (every seed's weights, Adam's moments, the per-seed
random streams, the epoch count) and the member's history (λ from which epoch on, and the
reward at each point), and a member that copies another's checkpoint continues exactly
where that one was, with its own λ from then on. Every member trains the same seeds with
the same streams, so members differ only in their schedules, and a schedule replayed from
scratch reproduces the member that found it.

Every result carries ``epochs``, ``reward`` (the mean over seeds of their evaluation
returns), ``reward_se``, ``lambda`` and ``r`` (now), ``values`` (every seed's return),
``schedule`` (``[[from_epoch, λ], ...]``), ``curves`` (``{"reward": [[epochs, reward],
...]}``, along the lineage) and ``index`` (the trial's place in suggestion order).
"""

from __future__ import annotations

import json
import os
import pickle
from typing import Any

import numpy as np
from ray import tune

from imm_ray.imm.weighting import lambda_to_ratio
from tuning.checkpoints import skip_written_checkpoints
from tuning.rl_trial import target_key, trial_config
from tuning.search import searched_lambda
from tuning.search_algorithms import INDEX

#: λ the algorithm is built with when IMM is on, before the member's own λ is set: the
#: IMM tables are built for any λ > 0, and a member's λ may later rise from 0.
BUILD_LAMBDA = 1.0
STATE_FILE = "algorithm.pkl"
HISTORY_FILE = "history.json"


class RLSearchTrainable(tune.Trainable):
    """One search trial of an RL experiment (see the module's docstring)."""

    def setup(self, config: dict[str, Any], inputs: dict[str, Any] | None = None) -> None:
        from imm_ray.console import quiet_exit_in_finalizers, quiet_library_logs
        from tuning.placement import Placement

        quiet_library_logs()
        quiet_exit_in_finalizers()
        trial = config["trial"]
        self.points = sorted(trial["epochs"])
        self.seeds = trial["seeds"]
        self.where = Placement.of_trial(trial["gpus"] > 0)
        table = None
        if inputs is not None and trial["imm"]:
            table = inputs["tables"][target_key(trial)]
        lam = BUILD_LAMBDA if trial["imm"] else 0.0
        built = {**trial, "groups": [{"lam": lam, "epochs": self.points}]}
        self.algo = trial_config(built, table, gpu=self.where.on_gpu).build_algo()
        self.initial = self.algo.get_state()
        self._start(config)

    def _start(self, config: dict[str, Any]) -> None:
        """A fresh member: epoch 0, the built weights, the config's λ."""
        self.index = int(config[INDEX])
        self.lam = searched_lambda(config)
        self.algo.set_lambda(self.lam)
        self.schedule: list[list[float]] = [[0, self.lam]]
        self.curve: list[list[float]] = []

    def step(self) -> dict[str, Any]:
        epochs = self.algo.epochs
        target = next(p for p in self.points if p > epochs)
        self.algo.train_epochs(target - epochs)
        returns = self.algo.evaluate_seeds()
        ok = returns[np.isfinite(returns)]
        reward = float(ok.mean()) if len(ok) else float("nan")
        se = float(ok.std(ddof=1) / np.sqrt(len(ok))) if len(ok) > 1 else float("nan")
        self.curve.append([target, reward])
        return {
            "epochs": target,
            "reward": reward,
            "reward_se": se,
            "lambda": self.lam,
            "r": lambda_to_ratio(self.lam),
            "values": {str(s): float(v) for s, v in zip(self.seeds, returns, strict=True)},
            "failed_seeds": int(len(returns) - len(ok)),
            "schedule": [list(item) for item in self.schedule],
            "curves": {"reward": [list(item) for item in self.curve]},
            INDEX: self.index,
            "done": target >= self.points[-1],
            **self.where.row(),
        }

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        # Tune stores this checkpoint in the trial's next folder by its index: past any
        # folder already written (tuning.checkpoints).
        skip_written_checkpoints(getattr(self, "_storage", None))
        with open(os.path.join(checkpoint_dir, STATE_FILE), "wb") as handle:
            pickle.dump(self.algo.get_state(), handle)
        history = {"schedule": self.schedule, "curve": self.curve, "lambda": self.lam}
        with open(os.path.join(checkpoint_dir, HISTORY_FILE), "w") as handle:
            json.dump(history, handle)

    def load_checkpoint(self, checkpoint_dir: str) -> None:
        """Continues from a checkpoint, this member's own or (under PBT) another's: that
        member's state and history, with this member's λ from here on."""
        with open(os.path.join(checkpoint_dir, STATE_FILE), "rb") as handle:
            self.algo.set_state(pickle.load(handle))
        with open(os.path.join(checkpoint_dir, HISTORY_FILE)) as handle:
            history = json.load(handle)
        self.schedule, self.curve = history["schedule"], history["curve"]
        self.algo.set_lambda(self.lam)
        if self.lam != self.schedule[-1][1]:
            self.schedule.append([self.algo.epochs, self.lam])

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        """Reuses this actor for another trial, or for this one with a new λ (PBT): back to
        a fresh member with the new config's λ; a checkpoint restored next continues it."""
        self.algo.set_state(self.initial)
        self._start(new_config)
        return True

    def cleanup(self) -> None:
        self.algo.stop()
