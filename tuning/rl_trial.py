"""How an RL trial dict becomes a training run: the key of its IMM target and the
seed-vectorized RLlib config that trains it. Shared by the sweep's trial
(:func:`tuning.rl.run_trial`) and the search's (:mod:`tuning.rl_search`); imports neither
torch nor RLlib until a config is built."""

from __future__ import annotations

import json
from typing import Any

from imm_ray.restricted.target import TargetSpec

#: Epochs per RLlib ``train()`` call in a trial: RLlib's per-iteration costs paid once per
#: 50 epochs (evaluations still land on every requested epoch count).
EPOCHS_PER_ITERATION = 50


def target_key(trial: dict[str, Any]) -> str | None:
    """What a trial's IMM target depends on (env, env config, target), as a key of
    :func:`restricted_tables`; ``None`` without IMM."""
    if not trial["imm"]:
        return None
    return json.dumps([trial["env"], trial["env_config"], trial["target"]], sort_keys=True)


def trial_config(trial: dict[str, Any], table: Any = None, *, gpu: bool = False) -> Any:
    """The seed-vectorized ``SeedReinforceConfig`` that trains a trial's seeds side by side,
    once per λ group.

    ``table``: the trial's IMM target already solved (:func:`restricted_tables`); ``None``
    solves it in the learner. ``gpu``: the learner trains on the trial's share of a GPU
    (``trial["gpus"]``), which must be one torch can use.
    """
    from imm_ray.rl.seeds import SeedReinforceConfig

    lams = [group["lam"] for group in trial["groups"]]
    target = None
    if trial["imm"]:
        target = TargetSpec(**trial["target"]) if table is None else table
    config = (
        SeedReinforceConfig()
        .environment(env=trial["env"], env_config=dict(trial["env_config"]))
        .training(seeds=trial["seeds"], epochs_per_iteration=EPOCHS_PER_ITERATION)
        .imm(
            lam=lams if len(lams) > 1 else lams[0],
            target=target,
            num_samples=trial["num_samples"] if trial["imm"] else None,
        )
    )
    if trial["gamma"] is not None:
        config.training(gamma=trial["gamma"])
    if gpu:
        config.learners(num_gpus_per_learner=trial["gpus"])
    return config
