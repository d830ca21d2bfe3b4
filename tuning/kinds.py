"""The one registry of experiment kinds: the CLI, sweeps and reports all look names up here.

Each kind is a module of :mod:`tuning` that defines its experiment class (with
``kind``, ``from_dict`` and the :class:`~tuning.base.SweepExperiment` interface), the
``EXPERIMENTS`` it names, and its trainable. Modules load on first use, cheapest first, so
a logistic sweep never imports RLlib. A new kind is one more entry in
:data:`KIND_MODULES`.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from imm_ray import checks
from tuning.base import SweepExperiment

#: Experiment kind → the module that defines it (looked up in this order). ``tuning.rl``
#: imports neither torch nor RLlib (≈ 0.3 s); the others import torch (≈ 1.5 s).
KIND_MODULES: dict[str, str] = {
    "rl": "tuning.rl",
    "logistic": "tuning.logistic",
    "lm": "tuning.lm",
    "causal-lm": "tuning.causal_lm",
    "bert": "tuning.bert",
}


def kind_module(kind: str) -> ModuleType:
    """The module of experiment kind ``kind``."""
    checks.one_of("kind", kind, KIND_MODULES)
    return importlib.import_module(KIND_MODULES[kind])


def named_experiment(name: str) -> SweepExperiment | None:
    """The experiment called ``name``, or ``None``; imports kinds only until it is found."""
    for kind in KIND_MODULES:
        experiment = kind_module(kind).EXPERIMENTS.get(name)
        if experiment is not None:
            return experiment
    return None


def experiment_names() -> list[str]:
    """Every named experiment, kind by kind in registry order (imports every kind)."""
    return [name for kind in KIND_MODULES for name in kind_module(kind).EXPERIMENTS]


def experiment_from_dict(data: dict[str, Any]) -> SweepExperiment:
    """Rebuilds an experiment from its ``to_dict()`` (the ``kind`` key picks the class)."""
    module = kind_module(data.get("kind", "rl"))
    return module.EXPERIMENT_CLASS.from_dict(data)
