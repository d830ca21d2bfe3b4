"""The paper's RL claim at small data (Fig. 2) on the general single-seed RLlib path:
IMM from the POMDP policy beats plain REINFORCE."""

from __future__ import annotations

import numpy as np

from imm_ray.rl import ReinforceConfig, paper_lambda, train_and_evaluate

SEEDS = (0, 1, 2)


def test_imm_beats_no_imm_at_50_epochs(ray_session):
    task = ray_session.remote(num_cpus=1)(train_and_evaluate)
    base = [ReinforceConfig().debugging(seed=seed) for seed in SEEDS]
    configs = {
        "imm": [c.copy().imm(lam=paper_lambda(50)) for c in base],
        "no-imm": [c.copy().imm(target=None) for c in base],
    }
    reward = {
        method: np.mean([r[50] for r in ray_session.get([task.remote(c, [50]) for c in cs])])
        for method, cs in configs.items()
    }
    assert reward["imm"] > reward["no-imm"] + 2.0, reward
