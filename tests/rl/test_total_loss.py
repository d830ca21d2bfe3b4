"""total_loss = policy loss + λ·IMM on every learner that adds IMM, against a hand computation.

The three learners that add the IMM term (the single-seed REINFORCE learner with the
``IMMLearnerMixin``, the seed-vectorized learner, PPO with the same mixin) are fed small
hand-made batches at λ = 0.25, where ``λ·loss + imm`` and ``loss + λ·imm`` differ. Both
terms are worked out in float64 numpy from the module's weights, independently of the
learners' code: the policy term with :func:`hand_batches.hand_reinforce` (REINFORCE) or
the PPO loss written out below; the IMM risk (paper Eq. 9) as −Σ_a P̂(a | x̄) log Q̂(a | x̄)
with Q̂(a | x̄) = Σ_i w_i π(a | x̃_i) / Σ_i w_i over x̄'s extended states, written out per env
(the grid: every y, equally; Taxi: every destination the passenger's place allows,
equally), and averaged over the steps that count (PPO's padding and Taxi's steps after
termination do not). The target P̂ is a hand-made table with some zero entries.

Checked: the loss each learner returns, its ``total_loss`` metric, and its logged
components (policy, IMM, λ, and PPO's own terms), each against the hand values, and the
components against the total.
"""

from __future__ import annotations

import hand_batches as hand
import numpy as np
import pytest
import torch
from ray.rllib.algorithms.ppo.ppo import LEARNER_RESULTS_KL_KEY
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.learner import ENTROPY_KEY, VF_LOSS_KEY
from ray.rllib.evaluation.postprocessing import Postprocessing

import envs
from imm_ray.rl import ReinforceConfig
from imm_ray.rl.imm_learner import IMM_LAMBDA_KEY, IMM_LOSS_KEY, TOTAL_LOSS_KEY
from imm_ray.rl.imm_ppo import IMMPPOConfig, IMMPPOTorchLearner
from imm_ray.rl.reinforce_torch_learner import POLICY_LOSS_KEY, IMMReinforceTorchLearner
from imm_ray.rl.seeds import SeedReinforceConfig
from imm_ray.rl.seeds.seed_learner import SeedReinforceTorchLearner
from imm_ray.rl.seeds.tensor_env_runner import SeedTrajectories

#: λ ≠ 1, so that λ on the policy term instead of the IMM term changes the total.
LAM = 0.25
GRID_SIZE = 11
# float32 learner vs float64 hand computation.
REL = 1e-5


# ---------------------------------------------------------------- hand computations


def _target(n_contexts: int, n_actions: int, seed: int) -> np.ndarray:
    """A hand-made P̂ ``[C, A]``: far from uniform, every other row with a zero entry."""
    rng = np.random.default_rng(seed)
    table = rng.dirichlet(np.full(n_actions, 0.5), size=n_contexts)
    table[::2, 0] = 0.0
    return table / table.sum(axis=1, keepdims=True)


def _log_pi(weights: dict[str, np.ndarray], inputs) -> np.ndarray:
    """log π(· | one-hot(i)) ``[N, A]`` of a one-hidden-layer tanh MLP, in float64:
    W1 · one-hot(i) is column i of W1, then tanh, W2 and log-softmax."""
    h = np.tanh(weights["w1"][:, np.asarray(inputs)].T + weights["b1"])
    logits = h @ weights["w2"].T + weights["b2"]
    return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))


def _grid_extension(x: int) -> list[int]:
    """The grid's context x̄ = x extends to (x, y) for every y, all equally likely."""
    return [x * GRID_SIZE + y for y in range(GRID_SIZE)]


def _taxi_context(obs) -> int:
    row, col, passenger, _ = obs
    return (row * 5 + col) * 5 + passenger


def _taxi_extension(context: int) -> list[int]:
    """Taxi's context (row, col, passenger) extends to every destination the passenger's
    place allows, equally likely: the three other stands while it waits at a stand, all
    four while it rides (passenger 4). State id = context · 4 + destination."""
    passenger = context % 5
    return [context * 4 + d for d in range(4) if passenger == 4 or d != passenger]


def _hand_imm(weights, contexts, extension, target) -> float:
    """The IMM risk (Eq. 9) averaged over ``contexts`` (one per step that counts):
    −Σ_a P̂(a | x̄) log Q̂(a | x̄), Q̂(· | x̄) the mean of π(· | x̃) over x̄'s extension."""
    risks = []
    for context in contexts:
        induced = np.exp(_log_pi(weights, extension(context))).mean(axis=0)
        p = target[context]
        risks.append(-(p[p > 0] * np.log(induced[p > 0])).sum())
    return float(np.mean(risks))


def _assert_lambda_matters(policy: float, imm: float) -> None:
    """λ·policy + imm differs from policy + λ·imm by (1 − λ)(policy − imm): keep it visible."""
    assert abs((1 - LAM) * (policy - imm)) > 0.05, (policy, imm)


def _losses(learner, batch) -> torch.Tensor:
    """The loss ``compute_losses`` returns for the default module (what is minimized)."""
    fwd_out = learner.module[DEFAULT_MODULE_ID].forward_train(batch)
    losses = learner.compute_losses(
        fwd_out={DEFAULT_MODULE_ID: fwd_out}, batch={DEFAULT_MODULE_ID: batch}
    )
    return losses[DEFAULT_MODULE_ID]


def _logged(learner, *keys: str) -> dict[str, float]:
    """The learner's last logged value of each metric (PPO logs some with their graph)."""
    values = {key: learner.metrics.peek((DEFAULT_MODULE_ID, key)) for key in keys}
    return {key: float(torch.as_tensor(v).detach()) for key, v in values.items()}


# ---------------------------------------------------------------- single-seed REINFORCE


def test_single_seed_reinforce_total_loss_is_policy_loss_plus_lambda_times_imm(grid_env):
    """REINFORCE + IMM mixin on trajectory A: total = −mean(log π · G) + λ · mean IMM risk,
    returned, logged by the mixin and by RLlib's update, with the components logged alike."""
    target = _target(GRID_SIZE, 4, seed=1)
    config = ReinforceConfig().training(gamma=hand.GAMMA).imm(lam=LAM, target=target)
    learner = config.build_learner(env=grid_env)
    assert isinstance(learner, IMMReinforceTorchLearner)
    params = hand.single_params_of(learner)
    hand.randomize(params, seed=21)
    weights = hand.weights_of(params)
    policy, _ = hand.hand_reinforce(weights, hand.INPUTS_A, hand.ACTIONS_A, hand.RETURNS_A)
    imm = _hand_imm(weights, [x for x, _ in hand.OBS_A[:-1]], _grid_extension, target)
    _assert_lambda_matters(policy, imm)
    total = policy + LAM * imm

    episode = hand.make_episode(grid_env, hand.OBS_A, hand.ACTIONS_A, hand.REWARDS_A)
    loss = _losses(learner, hand.train_batch(learner, [episode]))
    assert loss.item() == pytest.approx(total, rel=REL)
    logged = _logged(learner, POLICY_LOSS_KEY, IMM_LOSS_KEY, IMM_LAMBDA_KEY, TOTAL_LOSS_KEY)
    assert logged == pytest.approx(
        {POLICY_LOSS_KEY: policy, IMM_LOSS_KEY: imm, IMM_LAMBDA_KEY: LAM, TOTAL_LOSS_KEY: total},
        rel=REL,
    )
    assert logged[TOTAL_LOSS_KEY] == pytest.approx(
        logged[POLICY_LOSS_KEY] + logged[IMM_LAMBDA_KEY] * logged[IMM_LOSS_KEY], rel=REL
    )

    # The full update path logs the loss computed before its optimizer step.
    results = learner.update(episodes=[episode])[DEFAULT_MODULE_ID]
    assert results[TOTAL_LOSS_KEY].peek() == pytest.approx(total, rel=REL)
    assert results[IMM_LOSS_KEY].peek() == pytest.approx(imm, rel=REL)


# ---------------------------------------------------------------- seed-vectorized REINFORCE


@pytest.mark.parametrize(
    ("seeds", "lam", "run_lams"),
    [([0, 1], LAM, [LAM, LAM]), ([0], [LAM, 0.0], [LAM, 0.0])],
    ids=["one-lambda", "lambda-groups"],
)
def test_seed_vectorized_total_loss_sums_each_runs_policy_loss_plus_its_lambda_times_imm(
    grid_env, seeds, lam, run_lams
):
    """Two runs (trajectory A for run 0, B for run 1), each with its own weights: the loss
    is Σ_r (policy_r + λ_r · IMM_r), a run at λ = 0 adding no IMM; policy_loss and imm_loss
    are logged as means over runs, imm_lambda as the mean λ."""
    target = _target(GRID_SIZE, 4, seed=2)
    config = (
        SeedReinforceConfig().training(seeds=seeds, gamma=hand.GAMMA).imm(lam=lam, target=target)
    )
    learner = config.build_learner(env=grid_env)
    assert isinstance(learner, SeedReinforceTorchLearner)
    params = hand.seed_params_of(learner)
    hand.randomize(params, seed=22)
    policies, imms = [], []
    for run, (obs, inputs, actions, returns) in enumerate(
        [
            (hand.OBS_A, hand.INPUTS_A, hand.ACTIONS_A, hand.RETURNS_A),
            (hand.OBS_B, hand.INPUTS_B, hand.ACTIONS_B, hand.RETURNS_B),
        ]
    ):
        weights = hand.weights_of(params, run)
        policies.append(hand.hand_reinforce(weights, inputs, actions, returns)[0])
        imms.append(_hand_imm(weights, [x for x, _ in obs[:-1]], _grid_extension, target))
    _assert_lambda_matters(policies[0], imms[0])
    total = sum(p + lam_r * i for p, i, lam_r in zip(policies, imms, run_lams, strict=True))

    trajectories = hand.make_trajectories(
        (hand.OBS_A, hand.ACTIONS_A, hand.REWARDS_A), (hand.OBS_B, hand.ACTIONS_B, hand.REWARDS_B)
    )
    loss = _losses(learner, hand.train_batch(learner, [trajectories]))
    assert loss.item() == pytest.approx(total, rel=REL)
    logged = _logged(learner, POLICY_LOSS_KEY, IMM_LOSS_KEY, IMM_LAMBDA_KEY)
    assert logged == pytest.approx(
        {
            POLICY_LOSS_KEY: np.mean(policies),
            IMM_LOSS_KEY: np.mean(imms),
            IMM_LAMBDA_KEY: np.mean(run_lams),
        },
        rel=REL,
    )

    # RLlib's update logs total_loss itself: the returned sum over runs.
    results = learner.update(episodes=[trajectories])[DEFAULT_MODULE_ID]
    assert results[TOTAL_LOSS_KEY].peek() == pytest.approx(total, rel=REL)
    if len(set(run_lams)) == 1:
        # One λ: the logged means give the total back, runs · (policy_loss + λ · imm_loss).
        assert results[TOTAL_LOSS_KEY].peek() == pytest.approx(
            len(run_lams) * (logged[POLICY_LOSS_KEY] + LAM * logged[IMM_LOSS_KEY]), rel=REL
        )


def test_seed_vectorized_imm_risk_averages_each_seeds_own_live_steps_on_taxi(taxi_env):
    """Taxi, where seed 0's episode terminates after 2 of the batch's 4 steps and seed 1's
    runs all 4: each seed's IMM risk is the mean over its own live steps (seed 0: 2, not
    4; its filler steps count for nothing), and so is its policy term in the total."""
    target = _target(125, 6, seed=3)
    config = (
        SeedReinforceConfig()
        .environment(env=envs.TAXI_MDP_ENV_ID)
        .training(seeds=[0, 1], gamma=hand.GAMMA)
        .imm(lam=LAM, target=target)
    )
    learner = config.build_learner(env=taxi_env)
    params = hand.seed_params_of(learner)
    hand.randomize(params, seed=23)
    trajectories = SeedTrajectories(
        obs=torch.tensor(hand.TAXI_OBS),
        actions=torch.tensor(hand.TAXI_ACTIONS),
        rewards=torch.tensor(hand.TAXI_REWARDS),
        alive=torch.tensor(hand.TAXI_ALIVE),
    )
    batch = hand.train_batch(learner, [trajectories])
    torch.testing.assert_close(batch[Columns.LOSS_MASK], torch.tensor(hand.TAXI_ALIVE))

    policies, imms = [], []
    for seed in range(2):
        live = [t for t, alive in enumerate(hand.TAXI_ALIVE[seed]) if alive]
        weights = hand.weights_of(params, seed)
        inputs = [
            _taxi_context(hand.TAXI_OBS[seed][t]) * 4 + hand.TAXI_OBS[seed][t][3] for t in live
        ]
        actions = [hand.TAXI_ACTIONS[seed][t] for t in live]
        returns = [hand.TAXI_RETURNS[seed][t] for t in live]
        policies.append(hand.hand_reinforce(weights, inputs, actions, returns)[0])
        contexts = [_taxi_context(hand.TAXI_OBS[seed][t]) for t in live]
        imms.append(_hand_imm(weights, contexts, _taxi_extension, target))
    # Wrong means would be far off: seed 0's 2 live steps' risk summed over the batch's 4
    # steps (half of it), or its filler steps' risk counted in.
    all_steps = _hand_imm(
        hand.weights_of(params, 0),
        [_taxi_context(o) for o in hand.TAXI_OBS[0]],
        _taxi_extension,
        target,
    )
    assert imms[0] / 2 > 0.05 and abs(all_steps - imms[0]) > 0.05

    risk = learner.compute_imm_risk(DEFAULT_MODULE_ID, batch)
    assert risk.tolist() == pytest.approx(imms, rel=REL)

    total = sum(p + LAM * i for p, i in zip(policies, imms, strict=True))
    assert _losses(learner, batch).item() == pytest.approx(total, rel=REL)
    assert _logged(learner, POLICY_LOSS_KEY, IMM_LOSS_KEY) == pytest.approx(
        {POLICY_LOSS_KEY: np.mean(policies), IMM_LOSS_KEY: np.mean(imms)}, rel=REL
    )


# ---------------------------------------------------------------- PPO + IMM mixin

PPO = {
    "clip_param": 0.2,
    "vf_clip_param": 5.0,
    "vf_loss_coeff": 0.5,
    "entropy_coeff": 0.01,
    "kl_coeff": 0.3,
}
# Trajectories A and B, then one padding step (PPO's bootstrap step) at x = 9, a context
# neither visits: LOSS_MASK is False there, so it counts in no term, IMM included.
PPO_OBS = [*hand.OBS_A[:-1], *hand.OBS_B[:-1], (9, 5)]
PPO_ACTIONS = [*hand.ACTIONS_A, *hand.ACTIONS_B, 0]
PPO_ADVANTAGES = [1.5, -0.7, 2.0, -1.2, 0.4, 0.9, 3.0]
PPO_VALUE_TARGETS = [2.0, -1.0, 0.5, 3.0, -2.5, 1.0, 8.0]
PPO_MASK = [True] * 6 + [False]


def _ppo_params(learner) -> tuple[dict[str, torch.nn.Parameter], dict[str, torch.nn.Parameter]]:
    """The policy and value MLPs of the PPO module, (W1, b1, W2, b2) each."""
    module = learner.module[DEFAULT_MODULE_ID]
    pi, vf = module.pi, module.vf
    pi_params = {"w1": pi[0].weight, "b1": pi[0].bias, "w2": pi[2].weight, "b2": pi[2].bias}
    vf_params = {"w1": vf[0].weight, "b1": vf[0].bias, "w2": vf[2].weight, "b2": vf[2].bias}
    assert set(map(id, module.parameters())) == set(
        map(id, [*pi_params.values(), *vf_params.values()])
    )
    return pi_params, vf_params


def _hand_ppo(pi, vf, inputs, actions, prev_logits, advantages, value_targets, mask):
    """RLlib's PPO loss, its terms by hand in float64 (``pi``, ``vf``: numpy weights):
    masked means of −min(A·r, A·clip(r, 1 ± ε)), vf_coeff · min((V − V_target)², vf_clip),
    −entropy_coeff · H(π) and kl_coeff · KL(π_old ‖ π), r = π(a | s) / π_old(a | s)."""
    steps = np.arange(len(actions))
    log_pi = _log_pi(pi, inputs)
    log_old = prev_logits - np.log(np.exp(prev_logits).sum(axis=1, keepdims=True))
    ratio = np.exp(log_pi[steps, actions] - log_old[steps, actions])
    clipped = np.clip(ratio, 1 - PPO["clip_param"], 1 + PPO["clip_param"])
    surrogate = np.minimum(advantages * ratio, advantages * clipped)
    values = (np.tanh(vf["w1"][:, inputs].T + vf["b1"]) @ vf["w2"].T + vf["b2"])[:, 0]
    vf_loss = np.minimum((values - value_targets) ** 2, PPO["vf_clip_param"])
    entropy = -(np.exp(log_pi) * log_pi).sum(axis=1)
    kl = (np.exp(log_old) * (log_old - log_pi)).sum(axis=1)
    terms = {
        "policy": -surrogate[mask].mean(),
        VF_LOSS_KEY: vf_loss[mask].mean(),
        ENTROPY_KEY: entropy[mask].mean(),
        LEARNER_RESULTS_KL_KEY: kl[mask].mean(),
    }
    # Not a trivial surrogate: the clip binds on some counted step.
    assert np.any((clipped != ratio) & mask & (advantages * clipped < advantages * ratio))
    return terms


def test_ppo_with_imm_total_loss_is_the_ppo_loss_plus_lambda_times_imm(grid_env):
    """IMM mixin on RLlib's PPO learner, on a hand-made train batch with a padding step:
    total = PPO loss (surrogate + vf + entropy + KL terms) + λ · IMM over the unpadded
    steps; the mixin's and PPO's logged terms each match and add up to the total."""
    target = _target(GRID_SIZE, 4, seed=4)
    config = IMMPPOConfig().training(**PPO).imm(lam=LAM, target=target)
    learner = config.build_learner(env=grid_env)
    assert isinstance(learner, IMMPPOTorchLearner)
    pi_params, vf_params = _ppo_params(learner)
    hand.randomize({**pi_params, **{f"vf_{k}": p for k, p in vf_params.items()}}, seed=24)
    pi, vf = hand.weights_of(pi_params), hand.weights_of(vf_params)

    inputs = np.array([x * GRID_SIZE + y for x, y in PPO_OBS])
    prev_logits = np.random.default_rng(5).normal(scale=1.5, size=(len(PPO_OBS), 4))
    actions, mask = np.array(PPO_ACTIONS), np.array(PPO_MASK)
    terms = _hand_ppo(
        pi,
        vf,
        inputs,
        actions,
        prev_logits,
        np.array(PPO_ADVANTAGES),
        np.array(PPO_VALUE_TARGETS),
        mask,
    )
    ppo = (
        terms["policy"]
        + PPO["vf_loss_coeff"] * terms[VF_LOSS_KEY]
        - PPO["entropy_coeff"] * terms[ENTROPY_KEY]
        + PPO["kl_coeff"] * terms[LEARNER_RESULTS_KL_KEY]
    )
    counted = [x for (x, _), keep in zip(PPO_OBS, PPO_MASK, strict=True) if keep]
    imm = _hand_imm(pi, counted, _grid_extension, target)
    _assert_lambda_matters(ppo, imm)
    total = ppo + LAM * imm

    old_log_probs = torch.log_softmax(torch.tensor(prev_logits, dtype=torch.float32), dim=-1)
    batch = {
        Columns.OBS: torch.tensor(PPO_OBS),
        Columns.ACTIONS: torch.tensor(PPO_ACTIONS),
        Columns.ACTION_DIST_INPUTS: torch.tensor(prev_logits, dtype=torch.float32),
        Columns.ACTION_LOGP: old_log_probs[torch.arange(len(PPO_ACTIONS)), PPO_ACTIONS],
        Postprocessing.ADVANTAGES: torch.tensor(PPO_ADVANTAGES),
        Postprocessing.VALUE_TARGETS: torch.tensor(PPO_VALUE_TARGETS),
        Columns.LOSS_MASK: torch.tensor(PPO_MASK),
    }
    assert _losses(learner, batch).item() == pytest.approx(total, rel=REL)
    keys = (
        POLICY_LOSS_KEY,
        VF_LOSS_KEY,
        ENTROPY_KEY,
        LEARNER_RESULTS_KL_KEY,
        IMM_LOSS_KEY,
        IMM_LAMBDA_KEY,
        TOTAL_LOSS_KEY,
    )
    logged = _logged(learner, *keys)
    assert logged == pytest.approx(
        {
            POLICY_LOSS_KEY: terms["policy"],
            VF_LOSS_KEY: terms[VF_LOSS_KEY],
            ENTROPY_KEY: terms[ENTROPY_KEY],
            LEARNER_RESULTS_KL_KEY: terms[LEARNER_RESULTS_KL_KEY],
            IMM_LOSS_KEY: imm,
            IMM_LAMBDA_KEY: LAM,
            TOTAL_LOSS_KEY: total,
        },
        rel=REL,
    )
    assert logged[TOTAL_LOSS_KEY] == pytest.approx(
        logged[POLICY_LOSS_KEY]
        + PPO["vf_loss_coeff"] * logged[VF_LOSS_KEY]
        - PPO["entropy_coeff"] * logged[ENTROPY_KEY]
        + PPO["kl_coeff"] * logged[LEARNER_RESULTS_KL_KEY]
        + logged[IMM_LAMBDA_KEY] * logged[IMM_LOSS_KEY],
        rel=REL,
    )
