"""The two RL paths compute the same thing: the general single-seed RLlib ``Reinforce`` and
the seed-vectorized ``SeedReinforce`` that ``imm-ray train rl`` and the sweeps run.

Their random streams differ, so a seed's figures differ between the paths; over 16 seeds
their means must agree within 3 standard errors (of the difference of the means), without
IMM and with it. (The single-seed path builds one RLlib algorithm per seed, a Ray task
each: most of the test's time. ``benchmarks/rl_paths.py`` compares them over 30 seeds.)
"""

from __future__ import annotations

import numpy as np

from imm_ray.rl import ReinforceConfig, paper_lambda, train_and_evaluate
from imm_ray.rl.seeds import SeedReinforceConfig, train_and_evaluate_seeds

SEEDS = list(range(16))
EPOCHS = 100  # the paths measured 12.19 ± 0.56 and 11.93 ± 0.64 there (rl_paths.py)
# IMM costs the single-seed path about 4 s a seed at 50 epochs (11 hidden cells enumerated
# per step), so the IMM-on comparison is made where IMM matters most: the paper's smallest
# data, λ by its rule (r = 0.2).
IMM_EPOCHS = 50


def _both_paths(ray_session, epochs: int, **imm) -> tuple[np.ndarray, np.ndarray]:
    """Every seed's evaluation after ``epochs`` on the single-seed path (one Ray task per
    seed) and on the seed-vectorized path (all seeds in one algorithm), IMM set by ``imm``."""
    task = ray_session.remote(num_cpus=1)(train_and_evaluate)
    configs = [ReinforceConfig().debugging(seed=seed).imm(**imm) for seed in SEEDS]
    pending = [task.remote(config, [epochs]) for config in configs]
    config = SeedReinforceConfig().training(seeds=SEEDS, epochs_per_iteration=50)
    vectorized = train_and_evaluate_seeds(config.imm(**imm), [epochs])[epochs]
    single = np.array([result[epochs] for result in ray_session.get(pending)])
    return single, vectorized


def _assert_means_agree(single: np.ndarray, vectorized: np.ndarray) -> None:
    stderr = np.hypot(single.std(ddof=1), vectorized.std(ddof=1)) / np.sqrt(len(SEEDS))
    gap = abs(single.mean() - vectorized.mean())
    assert gap < 3 * stderr, (single.mean(), vectorized.mean(), stderr)


def test_single_seed_and_seed_vectorized_paths_agree_over_16_seeds(ray_session):
    single, vectorized = _both_paths(ray_session, EPOCHS, target=None)
    _assert_means_agree(single, vectorized)
    # Both learn: far above a uniform-random policy's ≈ 0.8 over 22 steps.
    assert min(single.mean(), vectorized.mean()) > 8.0


def test_the_paths_agree_with_imm_on_over_16_seeds(ray_session):
    single, vectorized = _both_paths(ray_session, IMM_EPOCHS, lam=paper_lambda(IMM_EPOCHS))
    _assert_means_agree(single, vectorized)
    # Both are IMM runs: without IMM 50 epochs reach about 2.6 (120 seeds, seed-vectorized),
    # with it about 9.8; a path that dropped the IMM term would sit near the former.
    assert min(single.mean(), vectorized.mean()) > 6.0, (single.mean(), vectorized.mean())


def test_a_seeds_figure_at_e_epochs_does_not_depend_on_other_evaluations(ray_session):
    config = ReinforceConfig().debugging(seed=4).imm(target=None)
    assert train_and_evaluate(config, [2, 3])[3] == train_and_evaluate(config, [3])[3]
    seeds = SeedReinforceConfig().training(seeds=[4, 7]).imm(target=None)
    both = train_and_evaluate_seeds(seeds, [2, 3])[3]
    np.testing.assert_array_equal(both, train_and_evaluate_seeds(seeds, [3])[3])
