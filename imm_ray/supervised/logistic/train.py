"""Many logistic-regression runs trained at once: one weight vector per run, one tensor program.

A *run* is one Monte Carlo draw: its own n training points, its own weights
(w1, w2, w3, bias). Runs of different sizes share one batch by padding to the largest n
with masks, so a padded point never reaches a loss, a gradient or an induced model. Each
run's loss is its own mean over its n points, and the batch minimizes the *sum* of the
runs' losses, so the gradient with respect to one run's weights is that run's gradient
alone: runs stay independent (full-batch gradient descent on each).

The objective is ``(1 − r)·CE + r·R`` (Appendix D.1.1), R being the method's secondary loss
from :mod:`imm_ray.imm` (its binary, additive-logit fast path for sampled IMM):

- ``baseline``: r = 0, cross-entropy only;
- ``imm``: sampled IMM (Eq. (23)): the induced model Q̂(y | x1_t) = Σ_t' w_tt' Q(y | x1_t,
  x2_t', x3_t') / Σ_t' w_tt' with Laplace weights w_tt' = exp(−α |x1_t − x1_t'|) over the
  run's own points (Eq. (22)), k = n;
- ``serialized``: serialized IMM (Algorithm 2, Appendix D.5) with a stale snapshot
  refreshed every ``refresh_every`` steps (default: every n steps, the paper's choice);
- ``noising``: reverse-KD / noising (Eq. (14)), P̂ against the full model itself;
- ``interpolation``: trained as ``baseline``; P̂ is mixed into the test prediction with
  weight r (Figure 1).

r is fixed, or a schedule r(n) = intercept + slope·n clipped to [0, 0.9]; the default is the
paper's r(n) = 0.818 − 0.0111·n (Appendix D.1.1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from imm_ray import checks
from imm_ray.imm import (
    serialized_correction,
    serialized_imm_loss,
)
from imm_ray.imm.binary import (
    additive_binary_imm_loss,
    additive_binary_induced_log_probs,
    normalize_member_weights,
)
from imm_ray.supervised.logistic.data import Problem

METHODS = ("baseline", "imm", "serialized", "noising", "interpolation")
#: The paper's λ schedule as r = λ/(1+λ) = 0.818 − 0.0111·n (Appendix D.1.1): (intercept, slope).
PAPER_SCHEDULE = (0.818, -0.0111)
#: The range r is clipped to: r = 0 turns IMM off; r → 1 would drop the main loss.
RATIO_RANGE = (0.0, 0.9)


def schedule_ratio(
    n: int,
    schedule: tuple[float, float] = PAPER_SCHEDULE,
    ratio_range: tuple[float, float] = RATIO_RANGE,
) -> float:
    """r(n) = intercept + slope·n, clipped to ``ratio_range``.

    The paper's schedule stays inside [0, 0.9] for n = 2 … 73 (0.7958 at n = 2, 0.263 at
    n = 50); beyond n = 73 it clips to 0, i.e. plain cross-entropy.
    """
    checks.integer("dataset size", n, 1)
    intercept, slope = schedule
    low, high = ratio_range
    return float(min(max(intercept + slope * n, low), high))


@dataclass(frozen=True)
class Method:
    """How one curve is trained: the method, r, the target's quality and the optimizer."""

    name: str = "imm"
    """One of :data:`METHODS`."""
    ratio: float | None = None
    """Fixed r = λ/(1+λ) in [0, 1), or ``None`` for the schedule r(n)."""
    schedule: tuple[float, float] = PAPER_SCHEDULE
    """(intercept, slope) of r(n) = intercept + slope·n when ``ratio`` is ``None``."""
    ratio_range: tuple[float, float] = RATIO_RANGE
    """(low, high) that the scheduled r is clipped to, 0 ≤ low ≤ high < 1."""
    target_mix: float = 0.0
    """P̂ mixed with a coin flip at this rate (0 best; 0.2 and 0.5 in Appendix D.4)."""
    lr: float = 1.0
    """Full-batch gradient-descent step size."""
    alpha: float = 1.0
    """Inverse bandwidth α of the Laplace kernel."""
    refresh_every: int | None = None
    """Serialized IMM's snapshot period in steps; ``None``: every n steps."""
    max_steps: int = 500
    """Gradient steps at most. Full-batch GD at lr 1.0 on separable labels has no finite
    minimizer for the cross-entropy, and the IMM objective's is approached slowly, so the
    gradient tolerance rarely stops a run: the budget is set where test accuracy has
    levelled off. From 500 to 2000 steps, mean accuracy moves by at most 1.3 points at
    n ∈ {2, 10, 30, 50}, and the methods keep their order (benchmarks/results.md)."""
    tol: float = 1e-4
    """A run has converged, and stops, when every component of its gradient is below this."""

    def __post_init__(self) -> None:
        checks.one_of("method", self.name, METHODS)
        checks.number(
            "ratio",
            self.ratio,
            at_least=0,
            below=1,
            optional=True,
            allowed="a number in [0, 1) or None",
        )
        schedule = tuple(self.schedule)
        if len(schedule) != 2 or not all(checks.is_number(v) for v in schedule):
            checks.fail("schedule", self.schedule, "two finite numbers (intercept, slope)")
        object.__setattr__(self, "schedule", tuple(float(v) for v in schedule))
        bounds = tuple(self.ratio_range)
        if (
            len(bounds) != 2
            or not all(checks.is_number(v) for v in bounds)
            or not (0 <= bounds[0] <= bounds[1] < 1)
        ):
            checks.fail("ratio_range", self.ratio_range, "(low, high) with 0 <= low <= high < 1")
        object.__setattr__(self, "ratio_range", tuple(float(v) for v in bounds))
        checks.number("target_mix", self.target_mix, at_least=0, at_most=1)
        checks.number("lr", self.lr, above=0)
        checks.number("alpha", self.alpha, above=0)
        checks.integer(
            "refresh_every",
            self.refresh_every,
            1,
            optional=True,
            allowed="an integer >= 1 or None",
        )
        checks.integer("max_steps", self.max_steps, 1)
        checks.number("tol", self.tol, at_least=0)

    def ratio_at(self, n: int) -> float:
        """r for a run of n points (0 for the baseline)."""
        if self.name == "baseline":
            return 0.0
        if self.ratio is not None:
            return float(self.ratio)
        return schedule_ratio(n, self.schedule, self.ratio_range)

    @property
    def trained_with_target(self) -> bool:
        return self.name in ("imm", "serialized", "noising")


@dataclass
class Runs:
    """A padded batch of R runs: ``x [R, N, 3]``, ``y [R, N]``, ``mask [R, N]``, ``n [R]``."""

    x: torch.Tensor
    y: torch.Tensor
    mask: torch.Tensor
    n: torch.Tensor
    run_ids: list[int]
    """Each run's index within its size (its data stream, :func:`run_rng`)."""

    @property
    def size(self) -> int:
        return self.x.shape[0]

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Runs:
        """The batch on ``device``, with features of ``dtype`` (default: unchanged)."""
        return Runs(
            self.x.to(device, dtype or self.x.dtype),
            self.y.to(device),
            self.mask.to(device),
            self.n.to(device),
            self.run_ids,
        )


def run_rng(seed: int, n: int, run: int) -> np.random.Generator:
    """The generator of run ``run`` at size ``n``: the same data however runs are batched."""
    return np.random.default_rng([seed, n, run])


def make_runs(problem: Problem, sizes: Sequence[int], runs: Sequence[int], seed: int = 0) -> Runs:
    """Training sets for every (size, run) pair, padded into one batch (size-major order).

    Run ``i`` at size ``n`` draws from :func:`run_rng` ``(seed, n, i)``, so every method
    trained on the same (seed, n, i) sees the same points (common random numbers).
    """
    sizes = [int(n) for n in sizes]
    if not sizes or any(n < 1 for n in sizes):
        raise ValueError(f"sizes must be a non-empty list of integers >= 1, got {sizes!r}")
    width = max(sizes)
    pairs = [(n, i) for n in sizes for i in runs]
    x = np.zeros((len(pairs), width, 3))
    y = np.zeros((len(pairs), width), dtype=np.int64)
    mask = np.zeros((len(pairs), width), dtype=bool)
    for row, (n, i) in enumerate(pairs):
        x[row, :n], y[row, :n] = problem.sample((n,), run_rng(seed, n, i))
        mask[row, :n] = True
    return Runs(
        x=torch.as_tensor(x, dtype=torch.float32),
        y=torch.as_tensor(y),
        mask=torch.as_tensor(mask),
        n=torch.tensor([n for n, _ in pairs]),
        run_ids=[i for _, i in pairs],
    )


def held_out_set(
    problem: Problem, size: int = 10_000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The held-out test set (the same for every run of an experiment seed)."""
    return problem.sample((size,), np.random.default_rng([seed, 2**31 - 1]))


def _log_probs(logits: torch.Tensor) -> torch.Tensor:
    """Binary logits ``[...]`` → log-probs ``[..., 2]`` of (y = 0, y = 1)."""
    return torch.stack(
        (torch.nn.functional.logsigmoid(-logits), torch.nn.functional.logsigmoid(logits)), -1
    )


def _split_logits(weights: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The logit's short-context part w1·x1 + b and extended part w2·x2 + w3·x3, ``[R, N]`` each."""
    own = x[..., 0] * weights[:, None, 0] + weights[:, None, 3]
    other = x[..., 1] * weights[:, None, 1] + x[..., 2] * weights[:, None, 2]
    return own, other


def kernel_weights(runs: Runs, alpha: float) -> torch.Tensor:
    """Laplace weights w_tt' = exp(−α |x1_t − x1_t'|) over each run's own points, ``[R, N, N]``."""
    x1 = runs.x[..., 0]
    weights = torch.exp(-alpha * (x1[:, :, None] - x1[:, None, :]).abs())
    return normalize_member_weights(weights * runs.mask[:, None, :])


class Trainer:
    """Full-batch gradient descent of ``method`` on every run of ``runs`` at once."""

    def __init__(self, method: Method, problem: Problem, runs: Runs) -> None:
        self.method, self.problem, self.runs = method, problem, runs
        r_rows, width = runs.mask.shape
        device, dtype = runs.x.device, runs.x.dtype
        self.ratio = torch.tensor(
            [method.ratio_at(int(n)) for n in runs.n.tolist()], dtype=dtype, device=device
        )
        self.target = torch.as_tensor(
            problem.target(runs.x[..., 0].cpu().numpy(), method.target_mix),
            dtype=dtype,
            device=device,
        )
        self.mask = runs.mask.to(dtype)
        self.count = self.mask.sum(dim=1)
        self.kernel = (
            kernel_weights(runs, method.alpha) if method.name in ("imm", "serialized") else None
        )
        self.weights = torch.zeros(r_rows, 4, dtype=dtype, device=device)
        self._correction: torch.Tensor | None = None
        self._period = (
            torch.full((r_rows,), method.refresh_every, device=device)
            if method.refresh_every is not None
            else runs.n.clone()
        )

    def per_run_loss(self, weights: torch.Tensor, step: int) -> torch.Tensor:
        """Each run's objective ``[R]``: its mean over its own points."""
        runs, method = self.runs, self.method
        logits = (runs.x * weights[:, None, :3]).sum(-1) + weights[:, None, 3]  # [R, N]
        ce = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, runs.y.to(logits.dtype), reduction="none"
        )
        main = (ce * self.mask).sum(1) / self.count
        if not method.trained_with_target:
            return main
        if method.name == "imm":
            own, other = _split_logits(weights, runs.x)
            extra = additive_binary_imm_loss(own, other, self.kernel, self.target)
        elif method.name == "noising":
            # noising_loss (Eq. (14)) of a binary model, −P̂(1) log σ(z) − P̂(0) log σ(−z),
            # is the logits form of binary cross-entropy against the soft label P̂(1):
            # one fused op instead of a [R, N, 2] log-prob table (tests check they agree).
            extra = torch.nn.functional.binary_cross_entropy_with_logits(
                logits, self.target[..., 1], reduction="none"
            )
        else:
            self._refresh(weights, step)
            extra = serialized_imm_loss(
                _log_probs(logits).reshape(-1, 2),
                self.target.reshape(-1, 2),
                self._correction,
                reduction="none",
            ).reshape(logits.shape)
        extra = (extra * self.mask).sum(1) / self.count
        return (1 - self.ratio) * main + self.ratio * extra

    def _refresh(self, weights: torch.Tensor, step: int) -> None:
        """Serialized IMM: recompute Q†/Q̂† for the runs whose snapshot period has come."""
        due = (step % self._period) == 0
        if self._correction is not None and not bool(due.any()):
            return
        runs = self.runs
        rows, width = runs.mask.shape
        if self._correction is None:
            due = torch.ones(rows, dtype=torch.bool, device=weights.device)
            self._correction = torch.ones(
                rows * width, 2, dtype=weights.dtype, device=weights.device
            )
        idx = due.nonzero().squeeze(1)
        # The due runs' points only: up to the largest of their sizes.
        width_due = int(runs.n[idx].max())
        with torch.no_grad():
            snap = weights.detach()[idx]
            x = runs.x[idx, :width_due]
            own, other = _split_logits(snap, x)
            stale = _log_probs(own + other).reshape(-1, 2)
            induced = additive_binary_induced_log_probs(
                own, other, self.kernel[idx, :width_due, :width_due]
            ).reshape(-1, 2)
            correction = serialized_correction(stale, induced)
        self._correction.view(rows, width, 2)[idx, :width_due] = correction.reshape(
            len(idx), width_due, 2
        )

    def fit(self) -> torch.Tensor:
        """Trains until every run has converged or ``max_steps``; returns weights ``[R, 4]``."""
        method = self.method
        active = torch.ones(self.runs.size, dtype=torch.bool, device=self.weights.device)
        for step in range(method.max_steps):
            weights = self.weights.clone().requires_grad_(True)
            loss = self.per_run_loss(weights, step).sum()
            (grad,) = torch.autograd.grad(loss, weights)
            grad = grad * active[:, None]
            self.weights -= method.lr * grad
            active &= grad.abs().amax(dim=1) >= method.tol
            if not bool(active.any()):
                break
        return self.weights


def accuracy(
    weights: torch.Tensor,
    test: tuple[np.ndarray, np.ndarray],
    method: Method,
    problem: Problem,
    n: torch.Tensor,
    chunk: int = 2048,
) -> np.ndarray:
    """Test accuracy in percent of every run, ``[R]`` (ties, at probability ½, count as 0).

    The full model predicts y = 1 where its logit is positive. Interpolation predicts it
    where (1 − r) σ(z) + r P̂(1 | x1) > ½, the decision of the IMM core's
    ``interpolate_log_probs`` with weight r (tests/supervised check the two agree).
    """
    x, y = test
    device = weights.device
    labels = torch.as_tensor(y, device=device).bool()
    points = torch.as_tensor(x, dtype=torch.float32, device=device)
    mixing = method.name == "interpolation"
    if mixing:
        target1 = torch.as_tensor(
            problem.target(x[:, 0], method.target_mix)[:, 1], dtype=torch.float32, device=device
        )
        ratio = torch.tensor([method.ratio_at(int(m)) for m in n.tolist()], device=device)
    out = []
    for start in range(0, len(weights), chunk):
        w = weights[start : start + chunk]
        logits = torch.addmm(w[:, 3:4], w[:, :3], points.T)
        if mixing:
            r = ratio[start : start + chunk, None]
            positive = (1 - r) * torch.sigmoid(logits) + r * target1 > 0.5
        else:
            positive = logits > 0
        out.append((positive == labels).float().mean(1) * 100)
    return torch.cat(out).cpu().numpy()


def imm_risk(weights: torch.Tensor, trainer: Trainer) -> np.ndarray:
    """Eq. (23) on each run's training set: Σ_t −Σ_y P̂(y | x1_t) log Q̂(y | x1_t), ``[R]``.

    The target is the trainer's (with its quality) and Q̂ the Laplace-kernel induced model.
    """
    runs = trainer.runs
    kernel = trainer.kernel
    if kernel is None:
        kernel = kernel_weights(runs, trainer.method.alpha)
    with torch.no_grad():
        own, other = _split_logits(weights, runs.x)
        per_point = additive_binary_imm_loss(own, other, kernel, trainer.target)
        return (per_point * runs.mask).sum(1).cpu().numpy()


METRICS = ("accuracy", "imm_risk")


def size_buckets(sizes: Sequence[int], power: int = 2, slack: float = 1.3) -> list[list[int]]:
    """Groups sorted sizes so that padding to a bucket's largest size costs little.

    A run of n points costs ∝ n^power per step (2 for sampled IMM's n × n member table, 1
    otherwise); a bucket grows while its padded cost ``len · max^power`` stays within
    ``slack`` times the unpadded ``Σ n^power``.
    """
    buckets: list[list[int]] = []
    for n in sorted(set(sizes)):
        if buckets:
            grown = [*buckets[-1], n]
            if len(grown) * n**power <= slack * sum(m**power for m in grown):
                buckets[-1] = grown
                continue
        buckets.append([n])
    return buckets


def train_and_score(
    methods: Sequence[Method],
    problem: Problem,
    sizes: Sequence[int],
    runs: int,
    seed: int = 0,
    test_size: int = 10_000,
    metric: str = "accuracy",
    device: str = "cpu",
) -> list[dict[int, np.ndarray]]:
    """Trains ``runs`` Monte Carlo runs of each method at every size and scores them.

    Returns, per method, ``{n: values [runs]}``. Sizes are trained in buckets of similar n
    (:func:`size_buckets`), each bucket one batched tensor program over all of its runs.
    All methods see the same training sets (common random numbers), and ``interpolation``
    reuses a ``baseline`` trained with the same optimizer settings instead of retraining.
    """
    checks.one_of("metric", metric, METRICS)
    checks.integer("runs", runs, 1)
    for n in sizes:
        if not checks.is_integer(n) or n < 1:
            checks.fail("sizes", n, "integers >= 1")
    test = held_out_set(problem, test_size, seed) if metric == "accuracy" else None
    scores: list[dict[int, np.ndarray]] = [{} for _ in methods]
    # Only sampled IMM builds an n × n member table per run; the others are linear in n.
    quadratic = any(m.name == "imm" for m in methods)
    for bucket in size_buckets(sizes, power=2 if quadratic else 1):
        batch = make_runs(problem, bucket, range(runs), seed).to(device)
        n = batch.n.cpu().numpy()
        trained: dict[object, tuple[torch.Tensor, Trainer]] = {}
        for index, method in enumerate(methods):
            # Interpolation trains exactly the baseline (cross-entropy only): runs sharing
            # the optimizer settings share one training; only test predictions differ.
            plain = method.name in ("baseline", "interpolation")
            as_trained = Method(
                "baseline", lr=method.lr, max_steps=method.max_steps, tol=method.tol
            )
            key = ("baseline", method.lr, method.max_steps, method.tol) if plain else method
            if key not in trained:
                trainer = Trainer(as_trained if plain else method, problem, batch)
                trained[key] = (trainer.fit(), trainer)
            weights, trainer = trained[key]
            values = (
                accuracy(weights, test, method, problem, batch.n)
                if test is not None
                else imm_risk(weights, Trainer(method, problem, batch))
            )
            for size in bucket:
                scores[index][size] = values[n == size]
    return scores
