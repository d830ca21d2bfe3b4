"""A new experiment kind: a table of logits, helped by a known marginal.

x ∈ {0 … 3} and z ∈ {0 … 4} are uniform and y ~ Bernoulli(p[x, z]), where x matters much
and z a little. The restricted model knows P̂(y | x) = mean_z p[x, z] exactly; the full
model, a logit per (x, z), is fitted to n samples by gradient descent on CE + λ·IMM, whose
induced model Q̂(y | x) averages Q(y | x, z) over every z (Eq. (6)). The value of a run is
the full model's expected log-loss under the true p (lower is better). Run it from the
repository root: ``python docs/examples/new_kind.py [STORAGE]`` (default ``results``).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from tuning.base import ExperimentBase, check_name_and_labels, check_resources, check_seeds
from tuning.kinds import KIND_MODULES


@dataclass(frozen=True)
class TableSetting:
    """One curve: the weight λ of the IMM term (0: no IMM)."""

    label: str
    lam: float = 0.0


@dataclass(frozen=True)
class TableExperiment(ExperimentBase):
    """Every setting at every dataset size n, over ``seeds``: one trial per setting."""

    name: str
    settings: tuple[TableSetting, ...]
    sizes: tuple[int, ...] = (10, 30, 100)
    seeds: tuple[int, ...] = tuple(range(10))
    steps: int = 100
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0

    kind: ClassVar[str] = "table-demo"
    size_name: ClassVar[str] = "n"
    repeats_name: ClassVar[str] = "seeds"
    y_label: ClassVar[str] = "Expected log-loss (nats)"

    def __post_init__(self) -> None:
        check_name_and_labels(self.name, [s.label for s in self.settings])
        check_seeds(list(self.seeds))
        check_resources(self.cpus_per_trial, self.gpus_per_trial)

    def trials(self) -> list[dict[str, Any]]:
        return [
            {
                "setting": s.label,
                "sizes": list(self.sizes),
                "tag": f"lam{s.lam:g}",
                "seeds": list(self.seeds),
                "lam": s.lam,
                "steps": self.steps,
            }
            for s in self.settings
        ]

    def validate(self) -> None:
        """Nothing to check before Ray starts: the fields checked themselves."""

    def load_inputs(self) -> dict[str, Any]:
        """The true p[x, z] = σ(a_x + b_z), drawn once on the driver; the trials read it
        from Ray's object store."""
        import numpy as np

        a, b = np.linspace(-2, 2, 4), np.random.default_rng(0).normal(0, 0.5, 5)
        return {"p": 1 / (1 + np.exp(-(a[:, None] + b[None, :])))}

    def trainable(self) -> Callable[[dict[str, Any], dict[str, Any]], None]:
        return table_trainable

    def curves(self) -> list[str]:
        return [s.label for s in self.settings]

    def point(self, setting: str, size: int) -> tuple[str, float]:
        return setting, float(size)

    def x_label(self) -> str:
        return "Dataset size n"

    def with_overrides(self, seeds=None, cpus_per_trial=None, gpus_per_trial=None):
        changes = {"cpus_per_trial": cpus_per_trial, "gpus_per_trial": gpus_per_trial}
        if seeds is not None:
            changes["seeds"] = tuple(check_seeds(seeds))
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def fit_and_score(p, n: int, seed: int, lam: float, steps: int) -> float:
    """One run: n samples drawn with ``seed``, ``steps`` of full-batch gradient descent on
    CE + λ·IMM; returns the expected log-loss."""
    import torch
    import torch.nn.functional as F

    from imm_ray.imm import imm_loss

    generator = torch.Generator().manual_seed(seed)
    x = torch.randint(p.shape[0], (n,), generator=generator)
    z = torch.randint(p.shape[1], (n,), generator=generator)
    y = torch.bernoulli(p[x, z], generator=generator).long()
    marginal = p.mean(dim=1)
    target = torch.stack([1 - marginal, marginal], dim=1)  # P̂(y | x), [X, 2]
    logits = torch.zeros(*p.shape, 2, requires_grad=True)
    optimizer = torch.optim.SGD([logits], lr=1.0)
    for _ in range(steps):
        log_q = logits.log_softmax(dim=-1)  # [X, Z, 2]: the members of x are its z's
        loss = F.nll_loss(log_q[x, z], y) + lam * imm_loss(log_q, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    q = logits.detach().softmax(dim=-1)[..., 1]
    return float(-(p * q.log() + (1 - p) * (1 - q).log()).mean())


def table_trainable(config: dict[str, Any], inputs: dict[str, Any]) -> None:
    """Tune function trainable: reports ``{"size": n, "values": {seed: value}}`` per size."""
    import torch
    from ray import tune

    trial = config["trial"]
    p = torch.tensor(inputs["p"], dtype=torch.float32)
    for n in trial["sizes"]:
        values = {
            str(s): fit_and_score(p, n, s, trial["lam"], trial["steps"]) for s in trial["seeds"]
        }
        tune.report({"size": n, "values": values})


# What the registry looks up: the kind's class and its named experiments. In the project
# the module lives in tuning/ and KIND_MODULES in tuning/kinds.py gets one more line.
EXPERIMENT_CLASS = TableExperiment
EXPERIMENTS = {
    "table-demo": TableExperiment(
        "table-demo", (TableSetting("No IMM"), TableSetting("IMM", lam=1.0))
    )
}
KIND_MODULES[TableExperiment.kind] = __name__


def main(storage: str) -> None:
    from imm_ray import results
    from imm_ray.console import quiet_library_logs
    from tuning.sweep import run_sweep_and_report

    quiet_library_logs()
    report = run_sweep_and_report(EXPERIMENTS["table-demo"], storage)
    print(report.table)
    frame = results.load(f"{storage}/table-demo")
    print(frame.groupby(["setting", "n"])["value"].mean().unstack("setting").round(3))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "results")
