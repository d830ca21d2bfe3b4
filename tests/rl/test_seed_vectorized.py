"""Many seeds in one RLlib algorithm: each seed trains as if alone, with the paper's losses."""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import pytest
import torch
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, LEARNER_RESULTS
from torch import nn

import envs
from envs import PomdpMdpPair
from imm_ray.rl import paper_lambda
from imm_ray.rl.imm_learner import IMM_LAMBDA_KEY, IMM_LOSS_KEY, TOTAL_LOSS_KEY
from imm_ray.rl.reinforce_torch_learner import POLICY_LOSS_KEY
from imm_ray.rl.seeds import (
    BatchedReinforceRLModule,
    SeedReinforce,
    SeedReinforceConfig,
    train_and_evaluate_seeds,
)
from imm_ray.rl.seeds.eager_adam import EagerAdam
from imm_ray.rl.seeds.returns_to_go import discounted_returns_to_go
from imm_ray.rl.seeds.seed_learner import NUM_FAILED_SEEDS_KEY
from imm_ray.rl.seeds.tensor_pair import TensorPair
from imm_ray.rl.streams import SeedStreams, inverse_cdf


def _params(algo) -> list[torch.Tensor]:
    module = algo.learner_group._learner.module[DEFAULT_MODULE_ID]
    return [p.detach().clone() for p in module.parameters()]


def _train_with_evals(seeds: list[int], epochs_per_iteration: int, epochs: int):
    config = SeedReinforceConfig().training(seeds=seeds, epochs_per_iteration=epochs_per_iteration)
    algo = config.build_algo()
    try:
        evals = []
        for _ in range(epochs):
            algo.train_epochs(1)
            evals.append(algo.evaluate_seeds())
        return np.stack(evals), _params(algo)
    finally:
        algo.stop()


def test_a_seed_trains_the_same_alone_or_beside_others(ray_session):
    alone_evals, alone = _train_with_evals([3], epochs_per_iteration=1, epochs=10)
    together_evals, together = _train_with_evals([1, 3, 7], epochs_per_iteration=4, epochs=10)
    # Batched matmuls may round differently for different seed counts: ~1e-7, no more.
    np.testing.assert_allclose(alone_evals[:, 0], together_evals[:, 1], rtol=1e-5)
    for a, b in zip(alone, together, strict=True):
        torch.testing.assert_close(a[0], b[1], rtol=1e-5, atol=1e-6)
    # The neighbours really are different runs.
    assert not np.allclose(together_evals[:, 0], together_evals[:, 1])


def test_lambda_groups_train_each_seed_as_it_trains_alone_at_each_lambda(ray_session):
    """imm(lam=[...]) runs every seed once per λ, side by side: run g·S + i is seed i
    trained alone at λ_g (λ = 0: plain REINFORCE, no IMM term at all)."""
    seeds, lams = [2, 5], [0.25, 0.0, 1.0]
    config = SeedReinforceConfig().training(seeds=seeds, epochs_per_iteration=2)
    grouped = train_and_evaluate_seeds(config.copy().imm(lam=lams), [3, 6])
    assert config.copy().imm(lam=lams).run_seeds == [2, 5, 2, 5, 2, 5]
    for g, lam in enumerate(lams):
        alone = config.copy().imm(lam=lam) if lam > 0 else config.copy().imm(target=None)
        separate = train_and_evaluate_seeds(alone, [3, 6])
        for epochs in (3, 6):
            # Batched matmuls may round differently for different run counts: ~1e-7.
            np.testing.assert_allclose(
                grouped[epochs][g * 2 : (g + 1) * 2], separate[epochs], rtol=1e-5
            )
    # The groups really are different runs of the same seeds.
    assert not np.allclose(grouped[6][:2], grouped[6][4:])


@pytest.mark.parametrize(
    ("lam", "message"),
    [
        ([], "imm_lambda must be a finite number >= 0 or a non-empty list of distinct"),
        ([0.2, 0.2], "imm_lambda must be a finite number >= 0 or a non-empty list of distinct"),
        ([0.2, -1.0], "imm_lambda must be a finite number >= 0, got -1.0"),
        ("0.2", "imm_lambda must be a finite number >= 0 or a list of them"),
    ],
)
def test_lambda_groups_are_checked_when_set(lam, message):
    with pytest.raises(ValueError, match=message):
        SeedReinforceConfig().imm(lam=lam)


def test_eager_adam_updates_as_torch_adam_does_bit_for_bit():
    torch.manual_seed(0)
    start = torch.randn(3, 8, 5)
    grads = [torch.randn_like(start) for _ in range(6)]

    def run(optimizer_class, **kwargs) -> tuple[torch.Tensor, dict]:
        param = nn.Parameter(start.clone())
        optimizer = optimizer_class([param], lr=1e-2, **kwargs)
        for grad in grads:
            optimizer.zero_grad()
            param.grad = grad.clone()
            optimizer.step()
        return param.detach(), optimizer.state_dict()

    for kwargs in ({}, {"amsgrad": True, "weight_decay": 0.1}):
        eager, eager_state = run(EagerAdam, **kwargs)
        reference, reference_state = run(torch.optim.Adam, **kwargs)
        assert torch.equal(eager, reference)
        assert eager_state["param_groups"] == reference_state["param_groups"]
        for key, value in reference_state["state"][0].items():
            assert torch.equal(eager_state["state"][0][key], value), key
    restored = EagerAdam([nn.Parameter(start.clone())], lr=1e-2)
    restored.load_state_dict(reference_state)
    assert torch.equal(
        restored.state_dict()["state"][0]["exp_avg"], eager_state["state"][0]["exp_avg"]
    )


def test_a_trial_worker_imports_neither_torch_dynamo_nor_pomdp_py(ray_session):
    """A figure-2 trial on a fresh Ray worker (a runtime env of its own, so no worker that an
    earlier test warmed up) trains through RLlib without loading torch's compiler stack
    or pomdp-py and the scipy.stats it imports: its IMM target is solved with numpy alone."""
    from tuning.rl import EXPERIMENTS, run_trial, trial_plan

    unneeded = ("torch._dynamo", "sympy", "pomdp_py", "scipy.stats")
    fresh = {"env_vars": {"IMM_RAY_TEST_FRESH_WORKER": "trial-imports"}}

    @ray_session.remote(num_cpus=1, runtime_env=fresh)
    def modules_of_a_trial(trial: dict) -> tuple[list[str], list[str], dict]:
        import sys

        before = [m for m in unneeded if m in sys.modules]
        rewards = run_trial(trial)
        after = [m for m in (*unneeded, "ray.rllib", "torch") if m in sys.modules]
        return before, after, rewards

    experiment = EXPERIMENTS["figure2"].with_overrides(seeds=1, epochs=(10, 200))
    imm_trial = next(t for t in trial_plan(experiment) if t["imm"])
    assert len(imm_trial["groups"]) == 2
    before, after, rewards = ray_session.get(modules_of_a_trial.remote(imm_trial))
    assert before == [] and after == ["ray.rllib", "torch"]
    assert sorted(rewards) == [10, 200]


def test_initial_weights_are_the_seeds_own_nn_linear_layers():
    space = gym.make(envs.MDP_ENV_ID)
    module = BatchedReinforceRLModule(
        observation_space=space.observation_space,
        action_space=space.action_space,
        model_config={"seeds": [4, 2], "hidden": [32]},
    )
    torch.manual_seed(2)
    first, second = nn.Linear(121, 32), nn.Linear(32, 4)
    assert torch.equal(module.weights[0][1], first.weight)
    assert torch.equal(module.biases[0][1], first.bias)
    assert torch.equal(module.weights[1][1], second.weight)
    assert torch.equal(module.biases[1][1], second.bias)


def test_per_seed_imm_risk_is_the_induced_policy_cross_entropy(ray_session):
    """Eq. (9) by hand, per seed: average π_s(a | x, y') over all 11 y', then −Σ P̂ log Q̂."""
    algo = SeedReinforceConfig().training(seeds=[0, 5]).imm(lam=0.25).build_algo()
    try:
        algo.train_epochs(2)
        learner = algo.learner_group._learner
        module = learner.module[DEFAULT_MODULE_ID].unwrapped()
        obs = torch.tensor([[[0, 0], [5, 3], [5, 9]], [[10, 7], [2, 2], [2, 2]]])
        risk = learner.compute_imm_risk(DEFAULT_MODULE_ID, {Columns.OBS: obs})
        target = algo.config.imm_target_table(envs.make_pair(envs.MDP_ENV_ID))
    finally:
        algo.stop()
    expected = []
    with torch.no_grad():
        w1, w2 = module.weights
        b1, b2 = module.biases
        for s in range(2):
            rows = []
            for x, _ in obs[s].tolist():
                one_hot = nn.functional.one_hot(torch.arange(11) + 11 * x, 121).float()
                logits = torch.tanh(one_hot @ w1[s].T + b1[s]) @ w2[s].T + b2[s]
                induced = torch.softmax(logits, dim=-1).mean(dim=0).numpy()
                rows.append(-(target[x] * np.log(induced)).sum())
            expected.append(np.mean(rows))
    np.testing.assert_allclose(risk.detach().numpy(), expected, rtol=1e-5)


def test_one_iteration_runs_its_epochs_and_logs_per_seed_means(ray_session):
    config = SeedReinforceConfig().training(seeds=[0, 1], epochs_per_iteration=3).imm(lam=0.5)
    algo = config.build_algo()
    try:
        result = algo.train()
        assert algo.epochs == 3
    finally:
        algo.stop()
    metrics = result[LEARNER_RESULTS][DEFAULT_MODULE_ID]
    assert np.isfinite(metrics[POLICY_LOSS_KEY])
    assert metrics[IMM_LOSS_KEY] > 0 and metrics[IMM_LAMBDA_KEY] == 0.5
    # total_loss is what the optimizer minimizes: the sum over both seeds of the last
    # epoch's policy_loss + λ · imm_loss (those two are means over seeds).
    assert metrics[TOTAL_LOSS_KEY] == pytest.approx(
        2 * (metrics[POLICY_LOSS_KEY] + 0.5 * metrics[IMM_LOSS_KEY]), rel=1e-5
    )
    assert metrics[NUM_FAILED_SEEDS_KEY] == 0
    assert result[ENV_RUNNER_RESULTS]["num_env_steps_sampled"] == 2 * 50 * 3


def test_evaluating_midway_leaves_training_alone(ray_session):
    def run(evaluate_midway: bool) -> tuple[np.ndarray, list[torch.Tensor]]:
        algo = SeedReinforceConfig().training(seeds=[11, 12]).imm(target=None).build_algo()
        try:
            algo.train_epochs(3)
            if evaluate_midway:
                algo.evaluate_seeds()
                algo.evaluate_seeds()
            algo.train_epochs(3)
            return algo.evaluate_seeds(), _params(algo)
        finally:
            algo.stop()

    returns_a, params_a = run(evaluate_midway=False)
    returns_b, params_b = run(evaluate_midway=True)
    assert all(torch.equal(a, b) for a, b in zip(params_a, params_b, strict=True))
    np.testing.assert_array_equal(returns_a, returns_b)
    assert returns_a.shape == (2,) and np.all(returns_a >= 0)


@pytest.mark.parametrize("num_samples", [None, 2])
def test_a_checkpoint_resumes_weights_optimizer_and_streams(ray_session, tmp_path, num_samples):
    config = SeedReinforceConfig().training(seeds=[2, 9], epochs_per_iteration=3)
    config = config.imm(num_samples=num_samples)
    algo = config.build_algo()
    try:
        algo.train()
        algo.save_to_path(tmp_path)
        algo.train()
        expected, expected_eval = _params(algo), algo.evaluate_seeds()
    finally:
        algo.stop()
    restored = SeedReinforce.from_checkpoint(tmp_path)
    try:
        assert restored.epochs == 3
        restored.train()
        assert all(torch.equal(a, b) for a, b in zip(expected, _params(restored), strict=True))
        np.testing.assert_array_equal(expected_eval, restored.evaluate_seeds())
    finally:
        restored.stop()


def test_imm_beats_no_imm_at_50_epochs_over_20_seeds(ray_session):
    seeds = list(range(20))
    config = SeedReinforceConfig().training(seeds=seeds, epochs_per_iteration=25)
    imm = train_and_evaluate_seeds(config.copy().imm(lam=paper_lambda(50)), [50])[50]
    no_imm = train_and_evaluate_seeds(config.copy().imm(target=None), [50])[50]
    # Measured: IMM ≈ 9.3, no IMM ≈ 2.4 (single-seed runs over 10 seeds: 9.1 vs 2.5).
    assert imm.shape == no_imm.shape == (20,)
    assert imm.mean() > no_imm.mean() + 4.0, (imm.mean(), no_imm.mean())


def test_returns_to_go_are_discounted_suffix_sums():
    rewards = torch.tensor([[1.0, 0.0, 2.0], [0.0, 4.0, 0.0]])
    expected = torch.tensor([[1.0 + 0.5 * 0 + 0.25 * 2, 0.0 + 0.5 * 2, 2.0], [2.0, 4.0, 0.0]])
    torch.testing.assert_close(discounted_returns_to_go(rewards, 0.5), expected)
    # Over the last axis of any batch shape, in the rewards' own dtype.
    wide = discounted_returns_to_go(rewards.double().view(2, 1, 3), 0.5)
    assert wide.dtype == torch.float64
    torch.testing.assert_close(wide, expected.double().view(2, 1, 3))


def test_inverse_cdf_never_draws_a_zero_mass_index():
    cdf = torch.tensor([[0.5, 0.5, 1.0], [0.0, 0.25, 1.0]])
    u = torch.tensor([[0.0, 0.49, 0.5, 0.999], [0.0, 0.2, 0.3, 0.999]])
    draws = inverse_cdf(cdf.unsqueeze(1).expand(-1, 4, -1).contiguous(), u)
    assert draws.tolist() == [[0, 0, 2, 2], [1, 1, 2, 2]]


def test_streams_are_per_seed():
    alone = SeedStreams([3], 1).uniform(5)
    together = SeedStreams([8, 3], 1).uniform(5)
    assert torch.equal(alone[0], together[1]) and not torch.equal(together[0], together[1])


def test_grid_walk_agrees_with_the_gym_env():
    pair = envs.make_pair(envs.MDP_ENV_ID)
    tensor_pair = TensorPair(pair)
    assert tensor_pair.deterministic
    policy = torch.full((2, pair.n_states, pair.n_actions), 0.25).cumsum(dim=-1)
    streams = SeedStreams([0, 1], 1)
    walk = tensor_pair.walk(policy, streams.uniform(3), streams.uniform(3, 6, 1))
    env = gym.make(envs.MDP_ENV_ID)
    for s in range(2):
        for n in range(3):
            env.reset(options={"state": int(walk.states[s, n, 0])})
            for t in range(6):
                _, reward, *_ = env.step(int(walk.actions[s, n, t]))
                assert math.isclose(reward, float(walk.rewards[s, n, t]), rel_tol=1e-6)
                if t < 5:
                    assert env.unwrapped.state == int(walk.states[s, n, t + 1])


@dataclass(frozen=True)
class _FullyObserved(PomdpMdpPair):
    """A tiny pair in one context whose observation is its state."""

    def state_context(self) -> np.ndarray:
        return np.zeros(self.n_states, dtype=np.int64)

    def state_observation(self) -> np.ndarray:
        return np.arange(self.n_states)

    def observation_state(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(obs).long()


@dataclass(frozen=True)
class _Coin(_FullyObserved):
    """Two states; action 0 stays, action 1 moves to state 1 with probability 0.25."""

    n_states: int = 2
    n_actions: int = 2
    n_contexts: int = 1

    def transition_matrix(self) -> np.ndarray:
        return np.array([[[1.0, 0.0], [0.0, 1.0]], [[0.75, 0.25], [0.75, 0.25]]])

    def reward_matrix(self) -> np.ndarray:
        return np.broadcast_to(np.array([0.0, 1.0]), (2, 2, 2)).copy()


def test_stochastic_pair_walk_follows_the_transition_matrix():
    tensor_pair = TensorPair(_Coin())
    assert not tensor_pair.deterministic and tensor_pair.uniforms_per_step == 2
    always_move = torch.tensor([[[0.0, 1.0], [0.0, 1.0]]])
    streams = SeedStreams([0], 1)
    walk = tensor_pair.walk(always_move, streams.uniform(4000), streams.uniform(4000, 1, 2))
    assert torch.all(walk.actions == 1)
    assert walk.rewards.mean().item() == pytest.approx(0.25, abs=0.03)


@dataclass(frozen=True)
class _Trap(_FullyObserved):
    """Three states; 2 is terminal (absorbing, reward 0). Action 1 from state 0 or 1 falls
    into it with probability 0.3 and pays 1; action 0 swaps states 0 and 1."""

    n_states: int = 3
    n_actions: int = 2
    n_contexts: int = 1

    def transition_matrix(self) -> np.ndarray:
        swap = [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
        fall = [[0.7, 0.0, 0.3], [0.0, 0.7, 0.3], [0.0, 0.0, 1.0]]
        return np.array([swap, fall])

    def reward_matrix(self) -> np.ndarray:
        rewards = np.zeros((2, 3, 3))
        rewards[1, :2, 2] = 1.0
        return rewards

    def terminal_states(self) -> np.ndarray:
        return np.array([False, False, True])

    def initial_belief(self) -> np.ndarray:
        return np.array([0.5, 0.5, 0.0])


def _start(tensor_pair, u):
    """A start state drawn from the initial belief by torch's ``inverse_cdf``."""
    return inverse_cdf(tensor_pair.start_cdf, u)


def _step(tensor_pair, state, action, u):
    """``(s', r)`` with ``s' ~ T[a, s, ·]`` from the pair's torch tables (``u`` draws it;
    ``None`` if the pair is deterministic)."""
    if tensor_pair.deterministic:
        return tensor_pair.next_state[action, state], tensor_pair.next_reward[action, state]
    next_state = inverse_cdf(tensor_pair.next_cdf[action, state], u)
    return next_state, tensor_pair.reward[action, state, next_state]


def _walker_by_walker(tensor_pair, policy_cdf, u_start, u_steps):
    """The walk one walker at a time, with torch's ``inverse_cdf`` and the pair's torch
    tables (:func:`_start` / :func:`_step`): what the vectorized NumPy walk must match."""
    seeds, walkers, horizon, _ = u_steps.shape
    shape = (seeds, walkers, horizon)
    states, actions = torch.zeros(shape, dtype=torch.long), torch.zeros(shape, dtype=torch.long)
    rewards, alive = torch.zeros(shape), torch.zeros(shape, dtype=torch.bool)
    for s in range(seeds):
        for n in range(walkers):
            state = _start(tensor_pair, u_start[s, n])
            living = not bool(tensor_pair.terminal[state])
            for t in range(horizon):
                action = inverse_cdf(policy_cdf[s, state], u_steps[s, n, t, 0])
                u_next = None if tensor_pair.deterministic else u_steps[s, n, t, 1]
                next_state, reward = _step(tensor_pair, state, action, u_next)
                states[s, n, t], actions[s, n, t], alive[s, n, t] = state, action, living
                rewards[s, n, t] = reward if living else 0.0
                living = living and not bool(tensor_pair.terminal[next_state])
                state = next_state
    return states, actions, rewards, alive


@pytest.mark.parametrize("which", ["grid", "taxi", "coin", "trap"])
def test_the_vectorized_walk_draws_exactly_what_each_walker_draws_alone(which):
    pair = {
        "grid": lambda: envs.make_pair(envs.MDP_ENV_ID),
        "taxi": lambda: envs.make_pair("imm_ray/Taxi-v0"),
        "coin": _Coin,
        "trap": _Trap,
    }[which]()
    tensor_pair = TensorPair(pair)
    generator = torch.Generator().manual_seed(7)
    seeds, walkers, horizon = 3, 4, 200
    logits = 3 * torch.randn(seeds, pair.n_states, pair.n_actions, generator=generator)
    policy_cdf = torch.softmax(logits, dim=-1).cumsum(dim=-1)
    u_start = torch.rand(seeds, walkers, generator=generator)
    per_step = tensor_pair.uniforms_per_step
    u_steps = torch.rand(seeds, walkers, horizon, per_step, generator=generator)
    walk = tensor_pair.walk(policy_cdf, u_start, u_steps)
    states, actions, rewards, alive = _walker_by_walker(tensor_pair, policy_cdf, u_start, u_steps)
    steps = walk.states.shape[-1]  # fewer than the horizon once every walker terminated
    assert walk.states.dtype == walk.actions.dtype == torch.long
    assert walk.rewards.dtype == torch.float32
    assert torch.equal(walk.states, states[..., :steps])
    assert torch.equal(walk.actions, actions[..., :steps])
    assert torch.equal(walk.rewards, rewards[..., :steps])
    if tensor_pair.terminates:
        assert torch.equal(walk.alive, alive[..., :steps])
        assert steps == horizon or not alive[..., steps:].any()
        if which == "trap":  # walkers end at different steps, and all before the horizon
            assert steps < horizon and len(set(walk.alive.sum(dim=-1).flatten().tolist())) > 1
    else:
        assert walk.alive is None and steps == horizon
    assert len(set(actions.flatten().tolist())) > 1, "the walk must exercise several actions"


@pytest.mark.parametrize(
    ("section", "kwargs", "message"),
    [
        ("training", {"seeds": []}, "seeds must be a non-empty list of distinct integers >= 0"),
        ("training", {"seeds": [1, 1]}, "seeds must be a non-empty list of distinct"),
        ("training", {"seeds": [-1]}, "seeds must be a non-empty list of distinct"),
        ("training", {"seeds": [0.5]}, "seeds must be a non-empty list of distinct"),
        ("training", {"seeds": "012"}, "seeds must be a non-empty list of distinct"),
        ("training", {"epochs_per_iteration": 0}, "epochs_per_iteration must be an integer >= 1"),
        ("training", {"trajectory_length": 0}, "trajectory_length must be an integer >= 1"),
        ("evaluation", {"evaluation_num_rollouts": 0}, "evaluation_num_rollouts must be"),
        ("evaluation", {"evaluation_horizon": -3}, "evaluation_horizon must be an integer >= 1"),
    ],
)
def test_settings_fail_when_set(section, kwargs, message):
    with pytest.raises(ValueError, match=message):
        getattr(SeedReinforceConfig(), section)(**kwargs)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c.training(grad_clip=1.0), "grad_clip must be None"),
        (lambda c: c.env_runners(num_env_runners=2), "num_env_runners must be 0"),
        (lambda c: c.learners(num_learners=2), "num_learners must be 0"),
        (lambda c: c.environment(env=envs.POMDP_ENV_ID), "env must be an MDP id"),
        (lambda c: c.environment(env="CartPole-v1"), "unknown env id 'CartPole-v1'"),
        (lambda c: c.environment(env_config={"size": 1}), "size must be an integer >= 2"),
    ],
)
def test_settings_fail_validation(change, message):
    with pytest.raises(ValueError, match=message):
        change(SeedReinforceConfig()).validate()


def _poison(algo: SeedReinforce, index: int) -> None:
    """Makes seed ``index``'s loss NaN from the next update on (a NaN output weight)."""
    module = algo.learner_group._learner.module[DEFAULT_MODULE_ID].unwrapped()
    with torch.no_grad():
        module.weights[-1][index].fill_(float("nan"))


def test_a_seed_whose_loss_turns_nan_is_reported_failed_and_spares_the_others(ray_session):
    def run(poison: bool) -> tuple[np.ndarray, list[torch.Tensor], dict]:
        config = SeedReinforceConfig().training(seeds=[3, 4, 5]).imm(lam=0.25)
        algo = config.build_algo()
        try:
            algo.train_epochs(2)
            if poison:
                _poison(algo, 1)
            result = algo.train_epochs(3)
            with (
                pytest.warns(RuntimeWarning, match="seed 4: its loss became non-finite")
                if (poison)
                else nullcontext()
            ):
                returns = algo.evaluate_seeds()
            return returns, _params(algo), result[LEARNER_RESULTS][DEFAULT_MODULE_ID]
        finally:
            algo.stop()

    clean, clean_params, _ = run(poison=False)
    failed, failed_params, metrics = run(poison=True)
    assert np.isnan(failed[1]) and np.isfinite(clean[1])
    assert metrics[NUM_FAILED_SEEDS_KEY] == 1
    assert np.isfinite(metrics[POLICY_LOSS_KEY]) and np.isfinite(metrics[TOTAL_LOSS_KEY])
    # The other seeds train exactly as they do when no seed fails.
    np.testing.assert_array_equal(failed[[0, 2]], clean[[0, 2]])
    for a, b in zip(clean_params, failed_params, strict=True):
        assert torch.equal(a[[0, 2]], b[[0, 2]])


def test_run_trial_reports_nan_for_a_failed_seed_and_the_table_counts_it():
    from tuning.aggregate import format_table, summarize

    rows = summarize([("imm", 50, 9.0), ("imm", 50, float("nan")), ("imm", 50, 7.0)])
    assert (rows[0].mean, rows[0].seeds, rows[0].failed) == (8.0, 2, 1)
    assert "2 (1 failed)" in format_table(rows)


def test_sampled_extension_uses_each_seeds_own_stream(ray_session):
    def weights(seeds: list[int]) -> list[torch.Tensor]:
        config = SeedReinforceConfig().training(seeds=seeds).imm(lam=1.0, num_samples=2)
        algo = config.build_algo()
        try:
            algo.train_epochs(3)
            return [p[seeds.index(3)] for p in _params(algo)]
        finally:
            algo.stop()

    alone, beside = weights([3]), weights([8, 3])
    # Batched matmuls may round differently for different seed counts: ~1e-7, no more.
    for a, b in zip(alone, beside, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_sampled_imm_risk_converges_to_the_exact_one(ray_session):
    exact_algo = SeedReinforceConfig().training(seeds=[0, 1]).imm(lam=0.25).build_algo()
    sampled_algo = (
        SeedReinforceConfig().training(seeds=[0, 1]).imm(lam=0.25, num_samples=4000).build_algo()
    )
    try:
        obs = torch.tensor([[[0, 0], [5, 3], [5, 9]], [[10, 7], [2, 2], [2, 2]]])
        exact = exact_algo.learner_group._learner.compute_imm_risk(
            DEFAULT_MODULE_ID, {Columns.OBS: obs}
        )
        learner = sampled_algo.learner_group._learner
        sampled = learner.compute_imm_risk(DEFAULT_MODULE_ID, {Columns.OBS: obs})
    finally:
        exact_algo.stop()
        sampled_algo.stop()
    # Same seeds, same initial weights: only the extension differs. The sampled risk is
    # biased up by Jensen (log of a sample mean), by O(1/k).
    torch.testing.assert_close(sampled, exact, rtol=0.01, atol=0.0)


def test_a_state_set_into_a_live_algorithm_continues_exactly(ray_session):
    """What population-based training does on a reused worker: an algorithm that has
    trained on takes an earlier state of its own, or another member's at the same epoch
    (RLlib's weight sync skipped both: their weight sequence numbers were not newer than
    the EnvRunner's, so it sampled with the weights it had)."""
    config = SeedReinforceConfig().training(seeds=[4, 7], epochs_per_iteration=5).imm(lam=1.0)
    reference = config.build_algo()
    member = config.build_algo()
    try:
        start = reference.get_state()
        reference.set_lambda(0.25)
        reference.train_epochs(10)
        at_ten = reference.get_state()
        reference.train_epochs(10)
        expected, expected_eval = _params(reference), reference.evaluate_seeds()
        # Another member, 10 epochs in at another λ, copies the reference at epoch 10.
        member.set_lambda(2.0)
        member.train_epochs(10)
        member.set_state(at_ten)
        member.set_lambda(0.25)
        member.train_epochs(10)
        assert all(torch.equal(a, b) for a, b in zip(expected, _params(member), strict=True))
        np.testing.assert_array_equal(expected_eval, member.evaluate_seeds())
        # The reference itself, back to its start: the same run again.
        reference.set_state(start)
        assert reference.epochs == 0
        reference.train_epochs(20)
        assert all(torch.equal(a, b) for a, b in zip(expected, _params(reference), strict=True))
    finally:
        reference.stop()
        member.stop()


def test_set_lambda_changes_the_imm_weight_from_the_next_epoch(ray_session):
    seeds = [1, 5]
    config = SeedReinforceConfig().training(seeds=seeds, epochs_per_iteration=10)

    def trained(built_with: SeedReinforceConfig, lam: float | None) -> list[torch.Tensor]:
        algo = built_with.build_algo()
        try:
            if lam is not None:
                algo.set_lambda(lam)
                assert algo.lambdas() == [lam] * len(seeds)
            algo.train_epochs(10)
            return _params(algo)
        finally:
            algo.stop()

    def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
        return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))

    built_high = config.copy().imm(lam=1.0)
    # Built at λ = 1 and set to 0.25 is built at 0.25; set to 0 is plain REINFORCE.
    assert same(trained(built_high, 0.25), trained(config.copy().imm(lam=0.25), None))
    assert same(trained(built_high, 0.0), trained(config.copy().imm(target=None), None))
    assert not same(trained(built_high, 0.25), trained(built_high, None))
    algo = config.copy().imm(target=None).build_algo()
    try:
        with pytest.raises(ValueError, match="needs a learner built with IMM on"):
            algo.set_lambda(0.5)
        with pytest.raises(ValueError, match="lambdas must be 2 finite numbers >= 0"):
            algo.set_lambda([0.1, -1.0])
    finally:
        algo.stop()
