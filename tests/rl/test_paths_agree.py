"""The two RL paths compute the same thing: the general single-seed RLlib ``Reinforce`` and
the seed-vectorized ``SeedReinforce`` that ``imm-ray train rl`` and the sweeps run.

Their random streams differ, so a seed's figures differ between the paths; over 30 seeds
their means must agree within 3 standard errors (of the difference of the means).
"""

from __future__ import annotations

import numpy as np

from imm_ray.rl import ReinforceConfig, train_and_evaluate
from imm_ray.rl.seeds import SeedReinforceConfig, train_and_evaluate_seeds

SEEDS = list(range(30))
EPOCHS = 150


def test_single_seed_and_seed_vectorized_paths_agree_over_30_seeds(ray_session):
    task = ray_session.remote(num_cpus=1)(train_and_evaluate)
    configs = [ReinforceConfig().debugging(seed=seed).imm(target=None) for seed in SEEDS]
    pending = [task.remote(config, [EPOCHS]) for config in configs]
    config = SeedReinforceConfig().training(seeds=SEEDS, epochs_per_iteration=50)
    vectorized = train_and_evaluate_seeds(config.imm(target=None), [EPOCHS])[EPOCHS]
    single = np.array([result[EPOCHS] for result in ray_session.get(pending)])
    stderr = np.hypot(single.std(ddof=1), vectorized.std(ddof=1)) / np.sqrt(len(SEEDS))
    gap = abs(single.mean() - vectorized.mean())
    assert gap < 3 * stderr, (single.mean(), vectorized.mean(), stderr)
    # Both learn: far above a uniform-random policy's ≈ 0.8 over 22 steps.
    assert min(single.mean(), vectorized.mean()) > 8.0


def test_a_seeds_figure_at_e_epochs_does_not_depend_on_other_evaluations(ray_session):
    config = ReinforceConfig().debugging(seed=4).imm(target=None)
    assert train_and_evaluate(config, [2, 3])[3] == train_and_evaluate(config, [3])[3]
    seeds = SeedReinforceConfig().training(seeds=[4, 7]).imm(target=None)
    both = train_and_evaluate_seeds(seeds, [2, 3])[3]
    np.testing.assert_array_equal(both, train_and_evaluate_seeds(seeds, [3])[3])
