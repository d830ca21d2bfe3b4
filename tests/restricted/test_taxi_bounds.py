"""Taxi's restricted policies: QMDP ≥ FIB ≥ exact lower bounds, and the policy's own return."""

from __future__ import annotations

import numpy as np
import pytest

import envs
from imm_ray.restricted import (
    blind_policy_values,
    context_policy_return,
    context_policy_values,
    context_utilities,
    fib,
    qmdp,
    restricted_policy,
    solve_restricted_policy,
)


@pytest.fixture(scope="module")
def pair() -> envs.Taxi:
    return envs.Taxi()


@pytest.mark.parametrize("discount", [0.9, 0.99])
def test_fib_lies_between_qmdp_and_lower_bounds(pair, discount):
    upper_qmdp, upper_fib = qmdp(pair, discount), fib(pair, discount)
    assert upper_fib.converged and upper_qmdp.converged
    beliefs = pair.context_belief()  # every belief a restricted policy is read off
    blind = (beliefs @ blind_policy_values(pair, discount).T).max(axis=1)
    policies = {
        kind: restricted_policy(context_utilities(pair, upper_fib), kind, temperature)
        for kind, temperature in (("argmax", 1.0), ("softmax", 1.0))
    }
    # A context policy is run by an agent that knows its context: b · V^π ≤ V*(b) at the
    # beliefs supported on one context.
    achieved = np.max(
        [beliefs @ context_policy_values(pair, p, discount) for p in policies.values()], axis=0
    )
    fib_value = np.array([upper_fib.value(b) for b in beliefs])
    qmdp_value = np.array([upper_qmdp.value(b) for b in beliefs])
    tol = 1e-9
    assert np.all(qmdp_value >= fib_value - tol)
    assert np.all(fib_value >= achieved - tol) and np.all(fib_value >= blind - tol)
    assert np.all(achieved >= blind - tol)  # the solved policies beat acting blind
    # Blind policies bound V* at every belief; check mixtures across contexts too.
    rng = np.random.default_rng(0)
    mixed = rng.dirichlet(np.ones(pair.n_contexts), size=20) @ beliefs
    mixed_fib = np.array([upper_fib.value(b) for b in mixed])
    mixed_blind = (mixed @ blind_policy_values(pair, discount).T).max(axis=1)
    assert np.all(mixed_fib >= mixed_blind - tol)


def test_fib_equals_qmdp_on_deterministic_taxi(pair):
    """With one successor per (s, a), FIB's max over next actions per observation is
    QMDP's max per state: the bounds coincide (they differ only under stochastic moves)."""
    np.testing.assert_allclose(fib(pair, 0.9).alphas, qmdp(pair, 0.9).alphas)


def test_restricted_policy_return_matches_simulation(pair):
    policy = solve_restricted_policy(pair, discount=0.9, kind="softmax", temperature=1.0)
    exact = context_policy_return(pair, policy, horizon=200)
    env = envs.TaxiEnv()
    rng = np.random.default_rng(1)
    context = pair.state_context()
    returns = []
    for episode in range(400):
        env.reset(seed=episode)
        total, done = 0.0, False
        while not done:
            action = rng.choice(pair.n_actions, p=policy[context[env.state]])
            _, reward, terminated, truncated, _ = env.step(action)
            total, done = total + reward, terminated or truncated
        returns.append(total)
    stderr = np.std(returns) / np.sqrt(len(returns))
    assert abs(np.mean(returns) - exact) < 4 * stderr


def test_argmax_policy_loops_at_a_wrong_stand(pair):
    """The memoryless argmax dispatcher drops the passenger at a stand; if it is the wrong
    one it picks them up again and drops them there again, every step −1, for 200 steps."""
    policy = solve_restricted_policy(pair, discount=0.9, kind="argmax")
    assert context_policy_return(pair, policy, horizon=200) == pytest.approx(-200.0)
    uniform = np.full((pair.n_contexts, pair.n_actions), 1 / pair.n_actions)
    assert context_policy_return(pair, uniform, 200) < -700


def test_bad_arguments_name_the_field(pair):
    with pytest.raises(ValueError, match="horizon must be an integer >= 1"):
        context_policy_return(pair, np.full((125, 6), 1 / 6), 0)
    with pytest.raises(ValueError, match=r"policy must have shape \(125, 6\)"):
        context_policy_return(pair, np.full((5, 6), 1 / 6), 10)
    with pytest.raises(ValueError, match=r"discount must be in \(0, 1\)"):
        blind_policy_values(pair, 1.0)
