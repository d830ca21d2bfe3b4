"""Training trajectories start from the env's start distribution on every RL path.

RLlib's ``SingleAgentEnvRunner`` re-seeds the env with the worker seed on every forced
reset, which once made every single-seed training trajectory start in the same cell. Each
test draws at least 500 training starts and applies a chi-square test against the grid's
uniform start distribution (121 cells, ≥ 5 expected per cell).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import chisquare

import envs
from imm_ray.rl import ReinforceConfig
from imm_ray.rl.imm_ppo import IMMPPOConfig
from imm_ray.rl.seeds import SeedReinforceConfig

PAIR = envs.make_pair(envs.MDP_ENV_ID)
TRAJECTORIES = 5 * PAIR.n_states  # 605


def start_cells(observations: list) -> np.ndarray:
    return PAIR.observation_state(np.asarray(observations)).numpy()


def assert_uniform(cells: np.ndarray) -> None:
    assert len(cells) >= 500
    counts = np.bincount(cells, minlength=PAIR.n_states)
    result = chisquare(counts)
    # Uniform starts: p ~ U(0, 1). The old bug put all 605 starts in one cell (p ≈ 0).
    assert result.pvalue > 1e-3, (result, counts.max())
    assert counts.max() < 20


def single_seed_starts(seed: int, count: int, envs_per_runner: int = 1) -> np.ndarray:
    config = (
        ReinforceConfig()
        .debugging(seed=seed)
        .env_runners(num_envs_per_env_runner=envs_per_runner)
        .training(num_episodes_per_train_batch=envs_per_runner)
        .imm(target=None)
    )
    algo = config.build_algo()
    try:
        starts = []
        while len(starts) < count:
            episodes, _ = algo._sample_episodes()  # what each train() samples
            starts += [e.get_observations(0) for e in episodes]
        algo.train()  # and training goes on from a fresh start too
        assert not np.array_equal(algo._sample_episodes()[0][0].get_observations(0), starts[-1])
    finally:
        algo.stop()
    return start_cells(starts)


def test_single_seed_trajectories_start_uniformly_and_reproducibly(ray_session):
    # Five sub-envs per runner: every forced reset seeds each of them afresh.
    assert_uniform(single_seed_starts(seed=0, count=TRAJECTORIES, envs_per_runner=5))
    # The paper's setting, one env and one trajectory per train(): fresh and reproducible.
    cells = single_seed_starts(seed=0, count=60)
    assert len(set(cells.tolist())) > 40
    assert np.array_equal(single_seed_starts(seed=0, count=20), cells[:20])
    assert not np.array_equal(single_seed_starts(seed=1, count=20), cells[:20])


def test_seed_path_trajectories_start_uniformly(ray_session):
    algo = SeedReinforceConfig().training(seeds=list(range(11))).imm(target=None).build_algo()
    try:
        starts = [algo.env_runner.sample()[0].obs[:, 0] for _ in range(TRAJECTORIES // 11)]
    finally:
        algo.stop()
    assert_uniform(start_cells(np.concatenate(starts)))


def test_ppo_trajectories_start_uniformly(ray_session):
    config = (
        IMMPPOConfig()
        .debugging(seed=0)
        .env_runners(num_env_runners=0, num_envs_per_env_runner=11)
        .imm(target=None)
    )
    algo = config.build_algo()
    try:
        episodes = algo.env_runner.sample(num_timesteps=TRAJECTORIES * 50 + 250, explore=True)
    finally:
        algo.stop()
    starts = [e.get_observations(0) for e in episodes if e.t_started == 0]
    assert_uniform(start_cells(starts[:TRAJECTORIES]))
