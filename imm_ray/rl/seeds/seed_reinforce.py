"""Many independent seeds of IMM-REINFORCE in one RLlib algorithm.

One :class:`SeedReinforce` trains S seeds of the paper's RL setting (App. D.3) side by
side: a batched RLModule holds every seed's policy, :class:`SeedTensorEnvRunner` samples
one 50-step trajectory per seed per epoch as one tensor program, and the learner takes
one Adam step on the sum of the seeds' own losses. A seed's run is the same whether it
trains alone or beside others (its weights, trajectories and evaluations depend only on
its own seed). Each ``train()`` runs ``epochs_per_iteration`` epochs, so RLlib's fixed
per-iteration costs are paid once per several epochs.

``imm(lam=[λ_1, …, λ_G])`` trains every seed once under each λ, as G·S independent *runs*
side by side (run ``g·S + i`` is seed ``seeds[i]`` under λ_g): a λ-rule setting's runs at
different λ share one algorithm instead of one each. A run is the same as seed
``seeds[i]`` trained alone with ``imm(lam=λ_g)``.

Example::

    from imm_ray.rl.seeds import SeedReinforceConfig, train_and_evaluate_seeds

    config = SeedReinforceConfig().training(seeds=list(range(30))).imm(lam=0.25)
    rewards = train_and_evaluate_seeds(config, eval_epochs=[10, 50])  # {10: [30], 50: [30]}
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from numbers import Real
from typing import Any, Self

import numpy as np
from ray.rllib.algorithms import Algorithm
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_RL_MODULE
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.utils.metrics import (
    ENV_RUNNER_RESULTS,
    ENV_RUNNER_SAMPLING_TIMER,
    LEARNER_RESULTS,
    LEARNER_UPDATE_TIMER,
    NUM_ENV_STEPS_SAMPLED_LIFETIME,
    SYNCH_WORKER_WEIGHTS_TIMER,
    TIMERS,
)
from ray.rllib.utils.typing import ResultDict

import envs
from envs import PomdpMdpPair
from imm_ray import checks
from imm_ray.checks import fail
from imm_ray.imm import validate_lambda
from imm_ray.rl.default_reinforce_rl_module import DEFAULT_MODEL_CONFIG
from imm_ray.rl.evaluation import (
    EVAL_RETURN_MEAN,
    RolloutEvaluationConfigMixin,
    evaluation_horizon_for,
)
from imm_ray.rl.imm_config import IMMConfigMixin
from imm_ray.rl.seeds.batched_module import BatchedReinforceRLModule
from imm_ray.rl.seeds.seed_learner import SeedReinforceTorchLearner
from imm_ray.rl.seeds.tensor_env_runner import SeedTensorEnvRunner
from imm_ray.rl.shared import check_lr_and_gamma, set_paper_defaults

#: Key of :meth:`SeedReinforce.evaluate`'s result: every seed's mean return, in seed order.
EVAL_SEED_RETURNS = "eval_seed_returns"


class SeedReinforceConfig(IMMConfigMixin, RolloutEvaluationConfigMixin, AlgorithmConfig):
    """Settings of :class:`SeedReinforce`; defaults are the paper's RL setting per seed.

    Policy one-hot(121) → 32 tanh → 4, Adam lr 1e-2, γ = 0.9 discounted reward-to-go, no
    baseline, one trajectory of the env's length (50) and one gradient step per epoch; IMM
    with the exact induced model (or ``imm(num_samples=k)``: k members per step from each
    seed's own stream), the FIB argmax target and λ = 0.25; evaluation over 10 rollouts of
    22 steps (the pair's ``evaluation_horizon``: whole episodes on Taxi). Only local
    EnvRunner and Learner are supported (the seeds are the parallelism), and no gradient
    clipping (a global norm would couple the seeds).
    """

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or SeedReinforce)
        set_paper_defaults(self)
        self.env_runner_cls = SeedTensorEnvRunner
        self.add_default_connectors_to_learner_pipeline = False
        # RLlib's NaN guard scans every gradient twice per step and would skip every
        # seed's step for one seed's NaN. The learner instead marks a seed whose loss
        # turns non-finite as failed and drops its term (SeedReinforce reports it).
        self.torch_skip_nan_gradients = True
        # RLlib's default samples CPU and memory use in a thread that Algorithm.stop()
        # joins, waiting out its sleep (≈ 0.7 s per trial); its numbers are never read here.
        self.log_sys_usage = False
        self.seeds: list[int] = [0]
        self.epochs_per_iteration = 1
        self.trajectory_length: int | None = None
        # Set by imm(lam=[...]): one group of runs per λ; None: one group, at imm_lambda.
        self.imm_lambdas: list[float] | None = None

    def imm(self, *, lam: float | Sequence[float] = NotProvided, **kwargs: Any) -> Self:
        """Sets the IMM term (see ``IMMConfigMixin.imm``); ``lam`` may also be a list of
        distinct λ ≥ 0: every seed then trains once under each, as separate runs."""
        if lam is NotProvided or isinstance(lam, Real):
            if lam is not NotProvided:
                self.imm_lambdas = None
            return super().imm(lam=lam, **kwargs)
        if isinstance(lam, str | bytes) or not isinstance(lam, Iterable):
            fail("imm_lambda", lam, "a finite number >= 0 or a list of them")
        lams = [validate_lambda(x, field="imm_lambda") for x in lam]
        if not lams or len(set(lams)) != len(lams):
            fail("imm_lambda", lam, "a finite number >= 0 or a non-empty list of distinct ones")
        # imm_lambda holds the largest, so imm_enabled says whether any run adds IMM.
        super().imm(lam=max(lams), **kwargs)
        self.imm_lambdas = lams if len(lams) > 1 else None
        return self

    @property
    def lambda_groups(self) -> list[float]:
        """The λ of each group of runs (one group unless ``imm(lam=[...])``)."""
        return list(self.imm_lambdas) if self.imm_lambdas is not None else [self.imm_lambda]

    @property
    def run_seeds(self) -> list[int]:
        """The seed of every run, group by group: ``seeds`` once per λ group."""
        return [int(s) for s in self.seeds] * len(self.lambda_groups)

    @property
    def run_lambdas(self) -> list[float]:
        """The λ of every run, in the order of :attr:`run_seeds` (0 where IMM is off)."""
        off = self.imm_target is None
        return [0.0 if off else lam for lam in self.lambda_groups for _ in self.seeds]

    def training(
        self,
        *,
        seeds: Sequence[int] = NotProvided,
        epochs_per_iteration: int = NotProvided,
        trajectory_length: int | None = NotProvided,
        **kwargs: Any,
    ) -> Self:
        """Sets training settings; see ``AlgorithmConfig.training`` for the shared ones.

        Args:
            seeds: the seeds trained side by side, distinct integers >= 0.
            epochs_per_iteration: epochs (one trajectory and one gradient step per seed
                each) per ``train()`` call.
            trajectory_length: steps per trajectory; ``None`` takes the env's truncation
                length (``trajectory_length`` of its pair, 50 on the grid).
        """
        super().training(**kwargs)
        if seeds is not NotProvided:
            self.seeds = _check_seeds(seeds)
        if epochs_per_iteration is not NotProvided:
            checks.integer("epochs_per_iteration", epochs_per_iteration, 1, numpy=True)
            self.epochs_per_iteration = int(epochs_per_iteration)
        if trajectory_length is not NotProvided:
            if trajectory_length is not None:
                checks.integer("trajectory_length", trajectory_length, 1, numpy=True)
                trajectory_length = int(trajectory_length)
            self.trajectory_length = trajectory_length
        return self

    def trajectory_length_for(self, pair: PomdpMdpPair) -> int:
        """The steps per trajectory: the setting, or the pair's ``trajectory_length``."""
        if self.trajectory_length is not None:
            return self.trajectory_length
        length = getattr(pair, "trajectory_length", None)
        if length is None:
            raise ValueError(
                f"trajectory_length is required: {type(pair).__name__} has no trajectory_length"
            )
        return int(length)

    def validate(self) -> None:
        pair = envs.make_mdp_pair(self.env, self.env_config)
        super().validate()
        _check_seeds(self.seeds)
        self.trajectory_length_for(pair)
        check_lr_and_gamma(self)
        if self.grad_clip is not None:
            fail("grad_clip", self.grad_clip, "None (clipping would couple the seeds)")
        if self.num_env_runners != 0:
            fail("num_env_runners", self.num_env_runners, "0 (the seeds are vectorized)")
        if self.num_learners != 0:
            fail("num_learners", self.num_learners, "0 (one local learner holds all seeds)")
        if self.add_default_connectors_to_learner_pipeline:
            fail(
                "add_default_connectors_to_learner_pipeline",
                True,
                "False (SeedReturnsToGo builds the batch)",
            )

    def get_default_rl_module_spec(self) -> RLModuleSpec:
        return RLModuleSpec(
            module_class=BatchedReinforceRLModule,
            model_config={**DEFAULT_MODEL_CONFIG, "seeds": self.run_seeds},
        )

    def get_default_learner_class(self) -> type:
        return SeedReinforceTorchLearner


def _check_seeds(seeds: Any) -> list[int]:
    if isinstance(seeds, str | bytes) or not isinstance(seeds, Iterable):
        fail("seeds", seeds, "a non-empty list of distinct integers >= 0")
    seeds = list(seeds)
    if (
        not seeds
        or not all(checks.is_integer(s, numpy=True) and s >= 0 for s in seeds)
        or len(set(seeds)) != len(seeds)
    ):
        fail("seeds", seeds, "a non-empty list of distinct integers >= 0")
    return [int(s) for s in seeds]


class SeedReinforce(Algorithm):
    """Per epoch: every seed samples one trajectory → one learner update → weight sync."""

    @classmethod
    def get_default_config(cls) -> SeedReinforceConfig:
        return SeedReinforceConfig()

    def setup(self, config: AlgorithmConfig) -> None:
        super().setup(config)
        # Set by train_epochs() to cut the last iteration short.
        self._epochs_next_iteration: int | None = None
        self._warned_failed: set[int] = set()

    @property
    def epochs(self) -> int:
        """Epochs trained so far (the same for every seed)."""
        return self.env_runner.epochs

    def training_step(self) -> None:
        runner = self.env_runner
        epochs = self._epochs_next_iteration or self.config.epochs_per_iteration
        for _ in range(epochs):
            with self.metrics.log_time((TIMERS, ENV_RUNNER_SAMPLING_TIMER)):
                trajectories = runner.sample()
            steps = {NUM_ENV_STEPS_SAMPLED_LIFETIME: runner.num_env_steps_sampled_lifetime}
            with self.metrics.log_time((TIMERS, LEARNER_UPDATE_TIMER)):
                learner_results = self.learner_group.update(episodes=trajectories, timesteps=steps)
            self.metrics.aggregate(learner_results, key=LEARNER_RESULTS)
            with self.metrics.log_time((TIMERS, SYNCH_WORKER_WEIGHTS_TIMER)):
                # What EnvRunnerGroup.sync_weights does for a local runner, minus the copy
                # into Ray's object store it makes for remote runners (there are none).
                state = self.learner_group.get_state(
                    components=f"{COMPONENT_LEARNER}/{COMPONENT_RL_MODULE}", inference_only=True
                )
                runner.set_state(state[COMPONENT_LEARNER])
        self.metrics.aggregate([runner.get_metrics()], key=ENV_RUNNER_RESULTS)

    def train_epochs(self, epochs: int) -> ResultDict:
        """Trains every seed ``epochs`` more epochs, in ``train()`` calls of at most
        ``epochs_per_iteration`` epochs; returns the last call's result."""
        checks.integer("epochs", epochs, 1, numpy=True)
        result: ResultDict = {}
        try:
            while epochs > 0:
                self._epochs_next_iteration = min(epochs, self.config.epochs_per_iteration)
                result = self.train()
                epochs -= self._epochs_next_iteration
        finally:
            self._epochs_next_iteration = None
        return result

    def set_lambda(self, lam: float | Sequence[float]) -> None:
        """Changes λ from the next epoch on: one λ for every run, or one per run (in the
        order of ``config.run_seeds``). The algorithm must have been built with IMM on
        (``imm(lam=λ > 0)`` and a target) for any λ > 0: population-based training builds
        it so and then sets the member's own λ, 0 included."""
        runs = len(self.config.run_seeds)
        lams = [lam] * runs if isinstance(lam, Real) else list(lam)
        results = self.learner_group.foreach_learner(lambda learner: learner.set_lambdas(lams))
        next(iter(results)).get()  # raises the learner's error, if any

    def lambdas(self) -> list[float]:
        """Every run's λ now (``set_lambda`` or the config's), in the order of ``run_seeds``."""
        results = self.learner_group.foreach_learner(lambda learner: learner.lambdas())
        return next(iter(results)).get()

    def failed_runs(self) -> dict[int, int]:
        """``{run: epoch}`` of the runs whose loss became non-finite (see the learner); a
        run is an index into ``config.run_seeds`` (the seed's index without λ groups)."""
        results = self.learner_group.foreach_learner(lambda learner: learner.failed_runs())
        return next(iter(results)).get()

    def failed_seeds(self) -> dict[int, int]:
        """``{seed: epoch}`` of the seeds whose loss became non-finite (in any λ group: the
        first epoch it did)."""
        seeds = self.config.run_seeds
        failed: dict[int, int] = {}
        for run, epoch in sorted(self.failed_runs().items(), key=lambda item: item[1]):
            failed.setdefault(seeds[run], epoch)
        return failed

    def evaluate_seeds(self) -> np.ndarray:
        """Paper evaluation of every seed: mean undiscounted return of
        ``evaluation_num_rollouts`` sampled rollouts of ``evaluation_horizon`` steps (the
        pair's by default; an episode that terminates stops there) from the pair's start
        distribution, shape ``[S]`` in the order of ``seeds`` (with λ groups: ``[G·S]``, in
        the order of ``config.run_seeds``).

        A failed run (its loss became non-finite) is NaN, with a warning naming it.
        """
        returns = self.env_runner.evaluate(
            self.config.evaluation_num_rollouts,
            evaluation_horizon_for(
                self.config.evaluation_horizon, self.config.env, self.config.env_config
            ),
        )
        failed = self.failed_runs()
        seeds, lams = self.config.run_seeds, self.config.run_lambdas
        grouped = self.config.imm_lambdas is not None
        for run, epoch in failed.items():
            if run not in self._warned_failed:
                self._warned_failed.add(run)
                which = f"seed {seeds[run]}" + (f" (λ = {lams[run]:.3g})" if grouped else "")
                warnings.warn(
                    f"{which}: its loss became non-finite at epoch {epoch}; it is reported "
                    "as failed (NaN) from then on",
                    RuntimeWarning,
                    stacklevel=2,
                )
        returns[sorted(failed)] = np.nan
        return returns

    def evaluate(self, parallel_train_future: Any = None) -> dict[str, Any]:
        """:meth:`evaluate_seeds` as RLlib's evaluation result: the mean over seeds and
        every seed's value."""
        returns = self.evaluate_seeds()
        return {EVAL_RETURN_MEAN: float(returns.mean()), EVAL_SEED_RETURNS: returns.tolist()}


def train_and_evaluate_seeds(
    config: SeedReinforceConfig, eval_epochs: Iterable[int]
) -> dict[int, np.ndarray]:
    """Trains ``config``'s seeds to the largest of ``eval_epochs`` and returns every seed's
    evaluation at each of them, ``{epochs: [S]}`` (seeds in the config's order; with λ
    groups ``[G·S]``, runs in the order of ``config.run_seeds``)."""
    eval_epochs = sorted(set(eval_epochs))
    if not eval_epochs:
        raise ValueError("eval_epochs must name at least one epoch count")
    for e in eval_epochs:
        checks.integer("eval_epochs", e, 1, numpy=True)
    algo = config.build_algo()
    try:
        results = {}
        for epoch in eval_epochs:
            algo.train_epochs(epoch - algo.epochs)
            results[epoch] = algo.evaluate_seeds()
        return results
    finally:
        algo.stop()
