"""The paper's RL claim at small data (Fig. 2) on the general single-seed RLlib path:
IMM from the POMDP policy beats plain REINFORCE."""

from __future__ import annotations

import numpy as np

from imm_ray.rl import EVAL_RETURN_MEAN, ReinforceConfig, paper_lambda

SEEDS = (0, 1, 2)


def train_and_evaluate(seed: int, imm: bool, epochs: int = 50) -> float:
    config = ReinforceConfig().debugging(seed=seed)
    config = config.imm(lam=paper_lambda(epochs)) if imm else config.imm(target=None)
    algo = config.build_algo()
    try:
        for _ in range(epochs):
            algo.train()
        return algo.evaluate()[EVAL_RETURN_MEAN]
    finally:
        algo.stop()


def test_imm_beats_no_imm_at_50_epochs(ray_session):
    task = ray_session.remote(num_cpus=1)(train_and_evaluate)
    reward = {
        imm: np.mean(ray_session.get([task.remote(seed, imm) for seed in SEEDS]))
        for imm in (False, True)
    }
    assert reward[True] > reward[False] + 2.0, reward
