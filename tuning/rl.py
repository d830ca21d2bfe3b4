"""The RL experiment kind: settings × dataset sizes × seeds, and the trial that trains them.

An :class:`Experiment` lists *settings* (one curve each: IMM or not, λ or the λ rule, the
restricted target's kind and quality), the dataset sizes (epochs) and the seeds.
:func:`trial_plan` turns it into trials; :func:`run_trial` trains one of them on the
seed-vectorized RLlib path (:mod:`imm_ray.rl.seeds`), and :func:`rl_trainable` is that
as a Tune trainable. ``imm-ray train rl`` runs the same trials as Ray tasks, ``imm-ray
sweep`` as Tune trials; either way the driver solves each IMM target once
(:meth:`Experiment.load_inputs`) and the trials get its table through Ray's object store.
The paper's RL figures are in :data:`EXPERIMENTS`; users write RL sweeps as YAML or TOML
(:mod:`tuning.config_file`).

Every experiment kind offers the same interface to :mod:`tuning.sweep` and
:mod:`tuning.report` (:class:`~tuning.base.SweepExperiment`): its trials and trainable, and
how a (setting, dataset size) result is drawn — which curve, at which x.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import envs
from imm_ray import checks
from imm_ray.checks import ConfigError
from imm_ray.imm.weighting import lambda_to_ratio, ratio_to_lambda
from imm_ray.restricted.target import TargetSpec
from imm_ray.rl.lambda_rule import paper_lambda
from tuning.base import ExperimentBase, check_name_and_labels, check_resources, check_seeds
from tuning.rl_trial import target_key, trial_config

PAPER_EPOCHS = (10, 20, 50, 75, 100, 125, 150, 175, 200, 250, 300, 350, 400, 450, 500)
X_AXES = ("epochs", "lambda_ratio")


@dataclass(frozen=True)
class Setting:
    """One curve of a figure: how (and whether) IMM is applied."""

    label: str
    """Legend label; unique within an experiment."""
    imm: bool = True
    """Add the IMM term; ``False`` is plain REINFORCE."""
    lam: float | None = None
    """Fixed λ ≥ 0, or ``None`` for the paper's rule λ(epochs) (App. D.3)."""
    target: TargetSpec = field(default_factory=TargetSpec)
    """The restricted target P̂ and its quality (argmax / softmax T / ε)."""
    num_samples: int | None = None
    """Sampled extension with k members instead of enumerating the belief's support."""

    def __post_init__(self) -> None:
        if not self.label:
            raise ConfigError("label", "label must be a non-empty string")
        checks.number(
            "lambda", self.lam, at_least=0, optional=True, allowed="'rule' or a finite number >= 0"
        )
        checks.integer("num_samples", self.num_samples, 1, optional=True)

    def lam_at(self, epochs: int) -> float:
        """λ used for a run of ``epochs`` epochs (0 without IMM)."""
        if not self.imm:
            return 0.0
        return paper_lambda(epochs) if self.lam is None else float(self.lam)

    @property
    def lambda_ratio(self) -> float | None:
        """r = λ/(1+λ) for a fixed λ; ``None`` under the rule."""
        if not self.imm:
            return 0.0
        return None if self.lam is None else lambda_to_ratio(self.lam)


@dataclass(frozen=True)
class Experiment(ExperimentBase):
    """A sweep: every setting at every dataset size, over its seeds."""

    name: str
    settings: tuple[Setting, ...]
    epochs: tuple[int, ...] = PAPER_EPOCHS
    seeds: int | tuple[int, ...] = 30
    """A count N (seeds 0 … N−1) or the seed ids themselves."""
    env: str = "imm_ray/ToroidalGrid-v0"
    env_config: dict[str, Any] = field(default_factory=dict)
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    x_axis: str = "epochs"
    """What the plot's x axis shows: ``"epochs"`` or ``"lambda_ratio"`` (one curve per epochs)."""
    seeds_per_trial: int | None = None
    """Seeds trained side by side in one trial (seed-vectorized); ``None``: all of them."""
    gamma: float | None = None
    """REINFORCE's discount γ in [0, 1] of the returns-to-go; ``None``: the paper's 0.9."""
    restricted_baselines: bool = False
    """Also report each IMM target's restricted policy alone (the paper's "POMDP policy
    alone"): its exact mean return under the evaluation protocol, no training."""

    def __post_init__(self) -> None:
        check_name_and_labels(self.name, [s.label for s in self.settings])
        if not isinstance(self.epochs, tuple | list) or not (
            self.epochs and all(checks.is_integer(e) and e >= 1 for e in self.epochs)
        ):
            checks.fail("epochs", self.epochs, "a non-empty list of integers >= 1")
        if not isinstance(self.seeds, int):
            object.__setattr__(self, "seeds", tuple(check_seeds(self.seeds)))
        check_seeds(self.seeds)
        check_resources(self.cpus_per_trial, self.gpus_per_trial)
        checks.integer("seeds_per_trial", self.seeds_per_trial, 1, optional=True)
        checks.number("gamma", self.gamma, at_least=0, at_most=1, optional=True)
        checks.one_of("x_axis", self.x_axis, X_AXES)
        if self.x_axis == "lambda_ratio" and any(s.lambda_ratio is None for s in self.settings):
            raise ConfigError(
                "x_axis", "x_axis 'lambda_ratio' needs a fixed lambda in every setting"
            )

    # The sweep interface (SweepExperiment).
    kind: ClassVar[str] = "rl"
    size_name: ClassVar[str] = "epochs"
    repeats_name: ClassVar[str] = "seeds"
    y_label: ClassVar[str] = "Average Reward"

    @property
    def seed_ids(self) -> list[int]:
        """The seeds trained, in order."""
        return check_seeds(self.seeds)

    def trials(self) -> list[dict[str, Any]]:
        return trial_plan(self)

    def validate(self) -> None:
        """Checks every setting's env and env config, without Ray or RLlib (its target is
        checked as :meth:`load_inputs` solves it)."""
        for trial in {t["setting"]: t for t in self.trials()}.values():
            check_trial(trial)

    def load_inputs(self) -> dict[str, Any]:
        """``{"tables": {target_key: P̂}}``: every distinct IMM target (env, env config,
        target) solved once on its env's POMDP, without torch or RLlib; a target that does
        not solve is a ``ValueError``."""
        return {"tables": restricted_tables(self.trials())}

    def notes(self) -> list[str]:
        """What a user should know before the run: where the λ rule turns IMM off."""
        notes = []
        for setting in self.settings:
            off = [e for e in sorted(set(self.epochs)) if setting.imm and setting.lam_at(e) == 0]
            if off and setting.lam is None:
                notes.append(
                    f"{setting.label}: the paper's λ rule gives r = 0 at "
                    f"{', '.join(map(str, off))} epochs, so IMM is off there"
                )
        return notes

    def trainable(self) -> Callable[[dict[str, Any]], None]:
        return rl_trainable

    def baselines(self) -> dict[str, float]:
        """``{label: mean return}`` of each distinct IMM target acting alone on the POMDP
        (empty unless ``restricted_baselines``): the expected undiscounted return from the
        start distribution over the pair's evaluation horizon, computed exactly."""
        if not self.restricted_baselines:
            return {}
        from envs import make_pair
        from imm_ray.restricted import context_policy_return

        pair = make_pair(self.env, self.env_config)
        baselines: dict[str, float] = {}
        seen: set[TargetSpec] = set()
        for setting in self.settings:
            if setting.imm and setting.target not in seen:
                seen.add(setting.target)
                value = context_policy_return(
                    pair, setting.target.table(pair), pair.evaluation_horizon
                )
                baselines[f"POMDP policy alone ({setting.label})"] = value
        return baselines

    def curves(self) -> list[str]:
        if self.x_axis == "lambda_ratio":
            return [f"{e} epochs" for e in sorted(set(self.epochs))]
        return [s.label for s in self.settings]

    def point(self, setting: str, size: int) -> tuple[str, float]:
        if self.x_axis == "lambda_ratio":
            ratio = {s.label: s.lambda_ratio for s in self.settings}
            return f"{size} epochs", float(ratio[setting])
        return setting, float(size)

    def x_label(self) -> str:
        if self.x_axis == "lambda_ratio":
            return "λ ratio r = λ / (1 + λ)"
        return "Number of epochs"

    def with_overrides(self, **overrides: Any) -> Experiment:
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})

    # The search interface (tuning.search).
    search_metrics: ClassVar[dict[str, str]] = {"reward": "max"}
    search_time: ClassVar[str] = "epochs"
    search_checkpoints: ClassVar[bool] = True

    def search_trial(self) -> dict[str, Any]:
        """The one IMM setting's trial, all seeds in it (every member of a population
        trains the same seeds); its λ is the search's."""
        searched = [s for s in self.settings if s.imm]
        if len(self.settings) != 1 or not searched:
            raise ConfigError(
                "settings",
                "a search varies λ of one IMM setting: settings must list exactly one, with "
                f"imm on, got {len(self.settings)} ({len(searched)} with IMM)",
            )
        experiment = dataclasses.replace(self, seeds_per_trial=None)
        return trial_plan(experiment)[0]

    def search_points(self) -> list[int]:
        return sorted(set(self.epochs))

    def search_budget(self, budget: int) -> Experiment:
        """Evaluated every as many epochs as now (its first evaluation point), up to
        ``budget``, and at ``budget``."""
        checks.integer("epochs", budget, 1)
        step = min(self.epochs)
        points = sorted({*range(step, budget + 1, step), budget})
        return dataclasses.replace(self, epochs=tuple(points))

    def search_trainable(self) -> Any:
        from tuning.rl_search import RLSearchTrainable

        return RLSearchTrainable


def trial_plan(experiment: Experiment) -> list[dict[str, Any]]:
    """One Tune trial per (setting, chunk of seeds): each λ group's epochs are evaluated
    along one run per seed.

    While λ is constant, evaluating a longer run at each shorter dataset size is
    statistically the same as separate runs; the λ rule changes λ at 200 epochs, so a
    rule setting has two λ groups (``"groups"``: each λ with the epochs it reports), and
    every seed trains once per group. All of a trial's runs (seeds × groups) train side
    by side in one seed-vectorized algorithm, so a setting is one trial however many λ
    it has; chunks of ``seeds_per_trial`` let Ray spread a large seed count over several
    workers. ``"epochs"`` lists every epoch count the trial reports.
    """
    trials = []
    for setting in experiment.settings:
        groups: dict[float, list[int]] = {}
        for epochs in sorted(set(experiment.epochs)):
            groups.setdefault(setting.lam_at(epochs), []).append(epochs)
        lams = "+".join(f"{lam:.3g}" for lam in groups)
        for chunk in _chunks(experiment.seed_ids, experiment.seeds_per_trial):
            trials.append(
                {
                    "setting": setting.label,
                    "sizes": sorted(set(experiment.epochs)),
                    "tag": f"lam{lams}_seeds{chunk[0]}-{chunk[-1]}",
                    "imm": setting.imm,
                    "groups": [{"lam": lam, "epochs": e} for lam, e in groups.items()],
                    "target": vars(setting.target).copy(),
                    "num_samples": setting.num_samples,
                    "epochs": sorted(set(experiment.epochs)),
                    "seeds": chunk,
                    "env": experiment.env,
                    "env_config": dict(experiment.env_config),
                    "gamma": experiment.gamma,
                    "gpus": experiment.gpus_per_trial,
                }
            )
    return trials


def _chunks(seeds: Sequence[int], size: int | None) -> list[list[int]]:
    size = size or len(seeds)
    return [list(seeds[i : i + size]) for i in range(0, len(seeds), size)]


def _figure(name: str, settings: list[Setting], **kwargs: Any) -> Experiment:
    return Experiment(name=name, settings=tuple(settings), **kwargs)


NO_IMM = Setting("No IMM", imm=False)
IMM_ARGMAX = Setting("IMM using maximal utility action")

#: The Taxi sweep's IMM weight: λ = 4 (r = 0.8). Taxi's per-step rewards are −1 or worse
#: until a delivery, so REINFORCE's term is an order of magnitude larger than on the grid
#: and the paper's grid rule (r ≤ 0.2) leaves IMM too weak to matter.
TAXI_LAMBDA = 4.0
#: The Taxi sweep's dataset sizes: episodes (one per epoch, up to 200 steps each).
TAXI_EPISODES = (10, 25, 50, 100, 200, 400)

EXPERIMENT_CLASS = Experiment
EXPERIMENTS: dict[str, Experiment] = {
    "figure2": _figure("figure2", [NO_IMM, IMM_ARGMAX]),
    "figure9": _figure(
        "figure9",
        [
            NO_IMM,
            IMM_ARGMAX,
            Setting(
                "IMM using softmaxed POMDP policy (T=0.5)",
                target=TargetSpec(kind="softmax", temperature=0.5),
            ),
            Setting(
                "IMM using softmaxed POMDP policy (T=1.0)",
                target=TargetSpec(kind="softmax", temperature=1.0),
            ),
        ],
    ),
    "lambda-search": _figure(
        "lambda-search",
        [Setting(f"r={r / 10:.1f}", imm=r > 0, lam=ratio_to_lambda(r / 10)) for r in range(10)],
        epochs=(50, 200, 400),
        x_axis="lambda_ratio",
    ),
    # Gymnasium's Taxi-v3 with the destination hidden (envs.taxi): the legacy dispatcher's
    # FIB policy, which never saw the destination, helps train one that does. Episodes
    # (one per epoch) as dataset size; γ = 0.99 because a delivery pays off ~15 steps later.
    "taxi": _figure(
        "taxi",
        [
            NO_IMM,
            Setting("IMM (argmax)", lam=TAXI_LAMBDA),
            Setting("IMM (softmax T=1)", lam=TAXI_LAMBDA, target=TargetSpec(kind="softmax")),
        ],
        epochs=TAXI_EPISODES,
        env="imm_ray/Taxi-v0",
        gamma=0.99,
        restricted_baselines=True,
        # Three trials share two cores at once instead of the third waiting for the others.
        cpus_per_trial=0.5,
    ),
}


def check_trial(trial: dict[str, Any]) -> None:
    """A trial's env, checked as :func:`trial_config`'s validation would check it, without
    importing RLlib: a registered pair's MDP that takes ``env_config``."""
    envs.make_mdp_pair(trial["env"], trial["env_config"])


def restricted_tables(trials: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``{target_key: P̂ as a [n_contexts, n_actions] table}``, each target solved once."""
    tables = {}
    for trial in trials:
        key = target_key(trial)
        if key is not None and key not in tables:
            pair = envs.make_mdp_pair(trial["env"], trial["env_config"])
            tables[key] = TargetSpec(**trial["target"]).table(pair)
    return tables


def run_trial(
    trial: dict[str, Any], inputs: dict[str, Any] | None = None, *, gpu: bool = False
) -> dict[int, dict[int, float]]:
    """Trains a trial's seeds and returns ``{epochs: {seed: mean evaluation return}}``
    (NaN for a seed whose loss became non-finite).

    ``inputs``: :meth:`Experiment.load_inputs`, whose table of the trial's target it
    trains with (``None``: the trial solves its target itself). ``gpu``: see
    :func:`trial_config`.
    """
    from imm_ray.console import quiet_library_logs
    from imm_ray.rl.seeds import train_and_evaluate_seeds

    quiet_library_logs()
    groups = trial["groups"]
    table = None
    if inputs is not None and trial["imm"]:
        table = inputs["tables"][target_key(trial)]
    per_epoch = train_and_evaluate_seeds(
        trial_config(trial, table, gpu=gpu), [e for group in groups for e in group["epochs"]]
    )
    seeds = trial["seeds"]
    runs = len(seeds)
    # Runs are group by group: group g's seeds are runs g·S … g·S + S − 1.
    return {
        epochs: dict(
            zip(seeds, map(float, per_epoch[epochs][g * runs : (g + 1) * runs]), strict=True)
        )
        for g, group in enumerate(groups)
        for epochs in group["epochs"]
    }


def rl_trainable(config: dict[str, Any], inputs: dict[str, Any]) -> None:
    """Tune function trainable: one setting × its seeds (once per λ group), evaluated
    along the way, with its IMM target's table from ``inputs``.

    Writes its process id to ``trial.pid`` in the trial folder first, so an operator (or a
    test) can find the process that runs a trial. A trial given a GPU that torch cannot
    use trains on CPU (:mod:`tuning.placement`).
    """
    from ray import tune

    from tuning.placement import Placement, start_trial

    trial = config["trial"]
    start_trial()
    where = Placement.of_trial(trial["gpus"] > 0)
    rewards = run_trial(trial, inputs, gpu=where.on_gpu)
    for epochs in sorted(rewards):
        values = {str(seed): value for seed, value in rewards[epochs].items()}
        tune.report({"size": epochs, "values": values, **where.row()})
