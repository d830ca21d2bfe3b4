"""Training runs: one seed, one λ, evaluated at several dataset sizes along the way.

While λ stays constant, a policy trained for 100 epochs and evaluated at 50 on the way is
statistically the same as two separate runs of 50 and 100 epochs (evaluation uses its own
RNG, see :mod:`imm_ray.rl.evaluation`). So a request for several epoch counts trains one
run per (seed, λ) to the largest, evaluating at each.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from imm_ray.rl.imm_config import TargetSpec, paper_lambda
from imm_ray.rl.reinforce import EVAL_RETURN_MEAN, ReinforceConfig

NO_IMM = "no-imm"
IMM = "imm"


@dataclass(frozen=True)
class RunSpec:
    """One training run: a method, a seed, a λ and the epochs at which to evaluate."""

    method: str
    seed: int
    lam: float
    eval_epochs: tuple[int, ...]
    target: TargetSpec = field(default_factory=TargetSpec)
    num_samples: int | None = None
    env: str | None = None
    env_config: dict | None = None
    num_gpus: float = 0.0
    """GPUs for the (local) learner; fractions share a GPU between trials."""

    def config(self) -> ReinforceConfig:
        """The RLlib config of this run (validated by RLlib when built)."""
        config = ReinforceConfig().debugging(seed=self.seed)
        config.environment(env=self.env or config.env, env_config=dict(self.env_config or {}))
        if self.num_gpus > 0:
            config.learners(num_gpus_per_learner=self.num_gpus)
        if self.method == NO_IMM:
            return config.imm(target=None)
        return config.imm(lam=self.lam, target=self.target, num_samples=self.num_samples)


def plan_runs(
    epochs: Iterable[int],
    seeds: Iterable[int],
    methods: Iterable[str],
    lam: float | None,
    **run_kwargs: object,
) -> list[RunSpec]:
    """Groups the requested epochs into as few runs as λ allows.

    ``lam=None`` applies the paper's λ rule per epoch count, which changes λ at 200
    epochs, so IMM then needs two runs per seed; a fixed λ or no IMM needs one.
    """
    epochs = sorted(set(epochs))
    runs = []
    for method in methods:
        if method not in (IMM, NO_IMM):
            raise ValueError(f"method must be {IMM!r} or {NO_IMM!r}, got {method!r}")
        groups: dict[float, list[int]] = {}
        for e in epochs:
            key = 0.0 if method == NO_IMM else (paper_lambda(e) if lam is None else lam)
            groups.setdefault(key, []).append(e)
        for seed in seeds:
            for group_lam, group_epochs in groups.items():
                runs.append(RunSpec(method, seed, group_lam, tuple(group_epochs), **run_kwargs))
    return runs


def train_and_evaluate(run: RunSpec) -> dict[int, float]:
    """Trains ``run`` and returns the mean evaluation return at each of its eval epochs."""
    algo = run.config().build_algo()
    try:
        results = {}
        for epoch in range(1, max(run.eval_epochs) + 1):
            algo.train()
            if epoch in run.eval_epochs:
                results[epoch] = algo.evaluate()[EVAL_RETURN_MEAN]
        return results
    finally:
        algo.stop()
