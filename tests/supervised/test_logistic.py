"""The logistic-regression IMM experiments' pieces: data, target, losses, batched training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from imm_ray.imm import interpolate_log_probs, noising_loss
from imm_ray.supervised.logistic.data import Problem
from imm_ray.supervised.logistic.train import (
    Method,
    Trainer,
    accuracy,
    held_out_set,
    kernel_weights,
    make_runs,
    schedule_ratio,
    train_and_score,
)

PROBLEMS = [
    Problem(),
    Problem(coef=(-0.7, 2.0, 0.5), bias=-0.4, low=0.0, high=2.0),
    Problem(coef=(1.0, 0.0, 1.5), bias=0.1),  # x2 plays no part: one uniform, not a sum
]


@pytest.mark.parametrize("problem", PROBLEMS)
def test_bayes_predictor_matches_monte_carlo(problem):
    rng = np.random.default_rng(0)
    x1 = np.linspace(problem.low, problem.high, 9)
    rest = rng.uniform(problem.low, problem.high, size=(200_000, 2))
    a, b, c = problem.coef
    for value, exact in zip(x1, problem.restricted_bayes(x1), strict=True):
        sampled = np.mean(a * value + rest @ np.array([b, c]) + problem.bias > 0)
        assert abs(sampled - exact) < 0.005, (value, sampled, exact)


def test_bayes_predictor_is_the_best_one_feature_classifier_and_the_quality_mix_weakens_it():
    problem = Problem()
    x, y = held_out_set(problem, 50_000)
    target = problem.target(x[:, 0])
    np.testing.assert_allclose(target.sum(-1), 1.0)
    bayes = np.mean((target[:, 1] > 0.5) == y)
    # Any threshold rule on x1 alone does no better than the Bayes predictor.
    for threshold in np.linspace(-1, 1, 21):
        assert np.mean((x[:, 0] > threshold) == y) <= bayes + 0.005
    for mix in (0.2, 0.5):
        mixed = problem.target(x[:, 0], mix)
        np.testing.assert_allclose(mixed[:, 1], (1 - mix) * target[:, 1] + mix / 2)
    assert np.all(problem.target(x[:, 0], 1.0) == 0.5)


def test_the_schedule_is_the_papers_rule_clipped_to_its_range():
    assert schedule_ratio(2) == pytest.approx(0.7958)
    assert schedule_ratio(50) == pytest.approx(0.263)
    assert schedule_ratio(80) == 0.0  # past n = 73 the rule would go negative: IMM off
    assert schedule_ratio(30, (1.25, -0.035), (0.2, 0.9)) == pytest.approx(0.2)
    assert schedule_ratio(5, (1.25, -0.035), (0.2, 0.9)) == pytest.approx(0.9)
    assert Method(schedule=(1.7, -0.16), ratio_range=(0.1, 0.9)).ratio_at(8) == pytest.approx(0.42)
    assert Method(name="baseline").ratio_at(5) == 0.0 and Method(ratio=0.3).ratio_at(5) == 0.3


def runs64(sizes=(4, 7), runs=3, seed=0):
    return make_runs(Problem(), sizes, range(runs), seed).to("cpu", torch.float64)


@pytest.mark.parametrize("name", ["imm", "noising", "serialized"])
def test_objective_gradient_matches_finite_differences(name):
    batch = runs64()
    trainer = Trainer(Method(name=name), Problem(), batch)
    weights = torch.randn(
        batch.size, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3)
    )
    trainer.per_run_loss(weights, 0)  # serialized: takes its snapshot at these weights
    assert torch.autograd.gradcheck(
        lambda w: trainer.per_run_loss(w, 1), (weights.clone().requires_grad_(),)
    )


def test_induced_model_is_the_kernel_weighted_average_of_the_full_model():
    batch = runs64(sizes=(5,), runs=2)
    alpha = 1.0
    weights = torch.tensor([[0.8, -1.2, 0.5, 0.1], [-0.3, 0.4, 1.5, -0.2]], dtype=torch.float64)
    kernel = kernel_weights(batch, alpha)
    trainer = Trainer(Method(name="imm", alpha=alpha), Problem(), batch)
    from imm_ray.imm.binary import additive_binary_induced_log_probs
    from imm_ray.supervised.logistic.train import _split_logits

    induced = additive_binary_induced_log_probs(*_split_logits(weights, batch.x), kernel).exp()
    x = batch.x.numpy()
    for r in range(2):
        w = weights[r].numpy()
        for t in range(5):
            kern = np.exp(-alpha * np.abs(x[r, t, 0] - x[r, :, 0]))
            full = 1 / (1 + np.exp(-(w[0] * x[r, t, 0] + x[r, :, 1:] @ w[1:3] + w[3])))
            expected = np.sum(kern * full) / np.sum(kern)
            assert induced[r, t, 1].item() == pytest.approx(expected, rel=1e-12)
    assert trainer.kernel is not None


def test_noising_term_equals_the_imm_cores_noising_loss():
    batch = runs64()
    trainer = Trainer(Method(name="noising", ratio=0.5), Problem(), batch)
    weights = torch.randn(batch.size, 4, dtype=torch.float64)
    ce_only = Trainer(Method(name="baseline"), Problem(), batch).per_run_loss(weights, 0)
    logits = (batch.x * weights[:, None, :3]).sum(-1) + weights[:, None, 3]
    log_q = torch.stack(
        (torch.nn.functional.logsigmoid(-logits), torch.nn.functional.logsigmoid(logits)), -1
    )
    core = noising_loss(log_q.reshape(-1, 2), trainer.target.reshape(-1, 2), reduction="none")
    core = (core.reshape(logits.shape) * trainer.mask).sum(1) / trainer.count
    torch.testing.assert_close(trainer.per_run_loss(weights, 0), 0.5 * ce_only + 0.5 * core)


def test_interpolation_accuracy_uses_the_cores_interpolation():
    problem = Problem()
    batch = make_runs(problem, (3, 8), range(4))
    method = Method(name="interpolation")
    weights = torch.randn(batch.size, 4)
    test = held_out_set(problem, 2000)
    got = accuracy(weights, test, method, problem, batch.n)
    points = torch.as_tensor(test[0], dtype=torch.float32)
    logits = weights[:, :3] @ points.T + weights[:, 3:4]
    log_sigmoid = torch.nn.functional.logsigmoid
    log_q = torch.stack((log_sigmoid(-logits), log_sigmoid(logits)), -1)
    target = torch.as_tensor(problem.target(test[0][:, 0]), dtype=torch.float32)
    for i, n in enumerate(batch.n.tolist()):
        mixed = interpolate_log_probs(log_q[i], target, schedule_ratio(n))
        expected = ((mixed[:, 1] > mixed[:, 0]).numpy() == test[1]).mean() * 100
        assert got[i] == pytest.approx(expected, abs=0.051)  # a tie at ½ may round either way


@pytest.mark.parametrize("name", ["imm", "serialized", "noising", "baseline"])
def test_a_run_trains_the_same_alone_or_batched_with_other_sizes_and_runs(name):
    problem = Problem()
    method = Method(name=name, max_steps=60)
    together = make_runs(problem, (3, 9), range(4), seed=5)
    alone = make_runs(problem, (9,), [2], seed=5)
    batched = Trainer(method, problem, together).fit()
    single = Trainer(method, problem, alone).fit()
    pairs = list(zip(together.n.tolist(), together.run_ids, strict=True))
    row = pairs.index((9, 2))
    torch.testing.assert_close(batched[row], single[0], rtol=1e-5, atol=1e-6)


def test_imm_beats_the_baseline_at_n_10():
    problem = Problem()
    imm, baseline = train_and_score(
        [Method(name="imm"), Method(name="baseline")], problem, (10,), runs=60, seed=11
    )
    difference = imm[10] - baseline[10]  # paired: the same 60 training sets
    t_stat = difference.mean() / (difference.std(ddof=1) / np.sqrt(len(difference)))
    assert difference.mean() > 1.0 and t_stat > 3, (difference.mean(), t_stat)


def test_interpolation_reuses_the_baseline_training():
    problem = Problem()
    baseline, interpolation = train_and_score(
        [Method(name="baseline"), Method(name="interpolation", ratio=0.0)], problem, (6,), runs=5
    )
    np.testing.assert_array_equal(baseline[6], interpolation[6])


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Problem(low=1.0, high=1.0), "low and high must be finite numbers with low < high"),
        (lambda: Problem(coef=(1.0, 2.0)), r"coef must be three finite numbers"),
        (lambda: Problem(bias=float("nan")), "bias must be a finite number"),
        (lambda: Method(name="kd"), "method must be one of baseline, imm, serialized"),
        (lambda: Method(ratio=1.0), r"ratio must be a number in \[0, 1\)"),
        (lambda: Method(target_mix=1.5), r"target_mix must be a number in \[0, 1\]"),
        (lambda: Method(lr=0), "lr must be a number > 0"),
        (lambda: Method(alpha=-1), "alpha must be a number > 0"),
        (lambda: Method(refresh_every=0), "refresh_every must be an integer >= 1"),
        (lambda: Method(max_steps=0), "max_steps must be an integer >= 1"),
        (lambda: schedule_ratio(0), "dataset size must be an integer >= 1"),
        (
            lambda: Method(schedule=(1.0,)),
            r"schedule must be two finite numbers \(intercept, slope\)",
        ),
        (lambda: Method(ratio_range=(0.5, 0.2)), "ratio_range must be .* 0 <= low <= high < 1"),
        (
            lambda: train_and_score([Method()], Problem(), (5,), runs=2, metric="auc"),
            "metric must be one of accuracy, imm_risk",
        ),
        (lambda: train_and_score([Method()], Problem(), (5,), runs=0), "runs must be an integer"),
    ],
)
def test_bad_settings_fail_with_the_field_and_the_allowed_range(build, message):
    with pytest.raises(ValueError, match=message):
        build()
