"""One registry of experiment kinds, and a ``tuning`` package whose imports point one way."""

from __future__ import annotations

import ast
import subprocess
import sys
import typing
from pathlib import Path

import pytest

import tuning.bert
import tuning.causal_lm
import tuning.lm
import tuning.logistic
import tuning.rl
from tuning.base import SweepExperiment
from tuning.kinds import (
    KIND_MODULES,
    experiment_from_dict,
    experiment_names,
    kind_module,
    named_experiment,
)

TUNING = Path(tuning.rl.__file__).parent
REPO = TUNING.parent


def tuning_imports(path: Path) -> set[str]:
    """Every ``tuning.*`` module ``path`` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tuning"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("tuning")}
    return found


def test_tuning_has_no_import_cycles_and_base_is_a_leaf():
    graph = {f"tuning.{p.stem}": tuning_imports(p) for p in TUNING.glob("*.py")}
    graph.pop("tuning.__init__")
    assert graph["tuning.base"] == set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, f"import cycle: {' -> '.join((*path, module))}"
        for imported in graph.get(module, ()):
            visit(imported, (*path, module))

    for module in graph:
        visit(module, ())


def test_every_kind_module_names_its_experiments_and_class():
    assert list(KIND_MODULES) == ["rl", "logistic", "lm", "causal-lm", "bert"]
    for kind in KIND_MODULES:
        module = kind_module(kind)
        assert module.EXPERIMENT_CLASS.kind == kind
        assert all(e.kind == kind for e in module.EXPERIMENTS.values())
    assert experiment_names() == [
        *tuning.rl.EXPERIMENTS,
        *tuning.logistic.EXPERIMENTS,
        *tuning.lm.EXPERIMENTS,
        *tuning.causal_lm.EXPERIMENTS,
        *tuning.bert.EXPERIMENTS,
    ]


def test_names_and_stored_experiments_resolve_through_the_registry():
    assert named_experiment("figure2") is tuning.rl.EXPERIMENTS["figure2"]
    assert named_experiment("figure1") is tuning.logistic.EXPERIMENTS["figure1"]
    assert named_experiment("table1") is tuning.lm.EXPERIMENTS["table1"]
    assert named_experiment("causal-lm") is tuning.causal_lm.EXPERIMENTS["causal-lm"]
    assert named_experiment("figure99") is None
    for name in ("figure2", "figure1", "table1", "table5", "causal-lm"):
        experiment = named_experiment(name)
        assert experiment_from_dict(experiment.to_dict()) == experiment
    kinds = "rl, logistic, lm, causal-lm, bert"
    with pytest.raises(ValueError, match=f"kind must be one of {kinds}, got 'nope'"):
        experiment_from_dict({"kind": "nope"})


def protocol_members(protocol: type) -> tuple[set[str], set[str], set[str]]:
    """A protocol's attributes (annotations), of which its class attributes (``ClassVar``),
    and its methods (what its body defines, but dunders)."""
    hints = typing.get_type_hints(protocol)
    class_attrs = {
        name for name, hint in hints.items() if typing.get_origin(hint) is typing.ClassVar
    }
    methods = {
        name
        for name, value in vars(protocol).items()
        if not name.startswith("_") and (callable(value) or isinstance(value, classmethod))
    }
    return set(hints), class_attrs, methods


def test_every_kind_implements_every_member_of_the_sweep_protocol():
    """What report.py and sweep.py read, every kind has: no kind leaves a member out for the
    callers to probe (a neutral value, e.g. no gap, where it has none)."""
    attrs, class_attrs, methods = protocol_members(SweepExperiment)
    assert {"spread", "gap", "baselines", "repeats_name", "from_dict"} <= attrs | methods
    for kind in KIND_MODULES:
        cls = kind_module(kind).EXPERIMENT_CLASS
        for name in class_attrs | methods:
            assert hasattr(cls, name), f"{cls.__name__} ({kind}) has no {name}"
        for experiment in kind_module(kind).EXPERIMENTS.values():
            for name in attrs:
                assert hasattr(experiment, name), f"{experiment.name} ({kind}) has no {name}"
            for name in methods:
                assert callable(getattr(experiment, name)), f"{kind}: {name} is not a method"
            assert isinstance(experiment.notes(), list)
            assert experiment.spread in (None, "std")
            assert experiment.gap is None or len(experiment.gap) == 2
            assert all(isinstance(v, float) for v in experiment.baselines().values())


def _printed(code: str) -> str:
    """What ``python -c CODE`` prints, once it has exited with 0."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_a_logistic_lookup_does_not_import_rllib():
    code = (
        "import sys; from tuning.kinds import named_experiment; "
        "assert named_experiment('figure1') is not None; "
        "print(any(m.startswith('ray.rllib') for m in sys.modules))"
    )
    assert _printed(code) == "False"


def test_planning_an_rl_sweep_imports_neither_torch_nor_pomdp_py():
    """The driver of an RL sweep looks the experiment up, validates every trial, solves its
    targets on the POMDP (its inputs) and plans it without torch, pomdp-py or RLlib: the
    trials import those."""
    code = (
        "import sys; from tuning.kinds import named_experiment; "
        "e = named_experiment('figure2'); e.validate(); e.load_inputs(); e.trials(); "
        "t = named_experiment('taxi'); t.validate(); t.load_inputs(); "
        "print(sorted(m for m in ('torch', 'pomdp_py', 'scipy', 'ray.rllib') if m in sys.modules))"
    )
    assert _printed(code) == "[]"


def test_no_project_file_cites_a_file_that_is_not_in_the_repository():
    cited = ("DESIGN.md", "STYLE.md", "../shared")
    for folder in ("imm_ray", "envs", "tuning", "tests", "benchmarks"):
        for path in (REPO / folder).rglob("*.py"):
            text = path.read_text()
            for name in cited:
                if name in text and path.name != "test_kinds.py":
                    assert (REPO / name).exists(), f"{path} cites {name}, which is not here"
