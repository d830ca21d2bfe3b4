"""The Tune trainable of the logistic experiments: a few settings, a group of sizes, all runs."""

from __future__ import annotations

from typing import Any

from imm_ray.supervised.logistic.data import Problem
from imm_ray.supervised.logistic.train import Method, train_and_score


def trial_methods(trial: dict[str, Any]) -> tuple[list[Method], Problem]:
    """The methods (one per setting) and the problem a trial dict describes, validated."""
    methods = [Method(**setting["method"]) for setting in trial["settings"]]
    return methods, Problem(**trial["problem"])


def logistic_trainable(config: dict[str, Any]) -> None:
    """Trains every Monte Carlo run of the trial's settings at its sizes, as batched tensors.

    Reports ``{"setting": label, "size": n, "values": {run: value}}`` per setting and size,
    keeping the run axis.
    """
    import torch
    from ray import tune

    trial = config["trial"]
    methods, problem = trial_methods(trial)
    device = "cuda" if trial.get("gpus", 0) > 0 and torch.cuda.is_available() else "cpu"
    torch.set_num_threads(max(1, int(trial.get("cpus", 1))))
    scores = train_and_score(
        methods,
        problem,
        trial["sizes"],
        trial["runs"],
        seed=trial["seed"],
        test_size=trial["test_size"],
        metric=trial["metric"],
        device=device,
    )
    for setting, per_size in zip(trial["settings"], scores, strict=True):
        for size in trial["sizes"]:
            values = {str(i): float(v) for i, v in enumerate(per_size[size])}
            tune.report({"setting": setting["label"], "size": size, "values": values})
