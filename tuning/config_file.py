"""User-defined RL sweeps (a :class:`tuning.rl.Experiment`) from YAML or TOML, with errors
that name the key and the line. The other kinds' experiments are named ones only.

Example (YAML; TOML has the same keys, with ``[[settings]]`` tables)::

    name: my-sweep
    env: imm_ray/ToroidalGrid-v0
    env_config: {size: 11}
    epochs: [10, 50, 100]
    seeds: 10
    resources: {cpus_per_trial: 1, gpus_per_trial: 0}
    settings:
      - label: No IMM
        imm: false
      - label: IMM argmax
        lambda: rule            # or a number λ >= 0, or lambda_ratio: r in [0, 1)
      - label: IMM softmax T=0.5
        target: {kind: softmax, temperature: 0.5, epsilon: 0.0}

A file with a ``search:`` section is a search (``imm-ray search FILE``,
:mod:`tuning.search`): its one setting's λ is what the search varies, and the section
holds the :class:`~tuning.search.SearchSpace` fields::

    name: my-search
    epochs: [10, 20, 30, 40, 50]   # the evaluation points
    seeds: 30
    settings:
      - label: IMM
    search: {param: r, low: 0.0, high: 0.9, algorithm: optuna, scheduler: asha,
             num_samples: 12, seed: 0}
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

import envs
from imm_ray import checks
from imm_ray.checks import ConfigError
from imm_ray.imm.weighting import ratio_to_lambda
from imm_ray.restricted.target import TargetSpec
from tuning.rl import Experiment, Setting
from tuning.search import Search, SearchSpace

TOP_KEYS = {
    "name",
    "env",
    "env_config",
    "epochs",
    "gamma",
    "seeds",
    "seeds_per_trial",
    "resources",
    "settings",
    "x_axis",
    "search",
}
SEARCH_KEYS = {field.name for field in dataclasses.fields(SearchSpace)}
RESOURCE_KEYS = {"cpus_per_trial", "gpus_per_trial"}
SETTING_KEYS = {"label", "imm", "lambda", "lambda_ratio", "target", "num_samples"}
TARGET_KEYS = {"kind", "temperature", "epsilon", "solver", "discount"}


class ConfigFileError(ValueError):
    """A bad sweep file: ``FILE:LINE: KEY: what is wrong``."""


def load_experiment(path: str | Path) -> Experiment:
    """Reads a ``.yaml``/``.yml``/``.toml`` sweep file into a validated :class:`Experiment`
    (a file with a ``search:`` section is refused: it is run by ``imm-ray search``)."""
    builder, data = _read(path)
    if isinstance(data, Mapping) and "search" in data:
        raise builder.fail(("search",), "this file is a search: run it with imm-ray search")
    return builder.experiment(data)


def load_search_file(path: str | Path) -> Search:
    """Reads a sweep file with a ``search:`` section into a validated :class:`Search`."""
    builder, data = _read(path)
    if not isinstance(data, Mapping) or "search" not in data:
        raise builder.fail(
            ("search",), "missing: a search file needs a search: section (param, low, high, ...)"
        )
    experiment = builder.experiment(data)
    space = builder.mapping(data["search"], ("search",), SEARCH_KEYS)
    search = Search(
        experiment.name, experiment, builder.build(SearchSpace, dict(space), ("search",))
    )
    try:
        search.validate()
    except ConfigError as err:
        where = ("search", err.field) if err.field in SEARCH_KEYS else (err.field,)
        raise builder.fail(where, str(err)) from None
    return search


def _read(path: str | Path) -> tuple[_Builder, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigFileError(f"{path}: no such sweep file")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        data, lines = _load_yaml(path, text)
    elif path.suffix == ".toml":
        data, lines = _load_toml(path, text)
    else:
        raise ConfigFileError(f"{path}: sweep files must end in .yaml, .yml or .toml")
    return _Builder(path, lines), data


def _load_yaml(path: Path, text: str) -> tuple[Any, dict[tuple, int]]:
    """The file's data and each key's line, from one parse: the node tree is composed
    once, then both walked for lines and constructed into the data."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        data = None if root is None else loader.construct_document(root)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f"{mark.line + 1}:" if mark is not None else ""
        raise ConfigFileError(
            f"{path}:{line} not valid YAML: {getattr(err, 'problem', err)}"
        ) from None
    finally:
        loader.dispose()
    lines: dict[tuple, int] = {}

    def walk(node: yaml.Node, key_path: tuple) -> None:
        lines[key_path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                lines[(*key_path, key.value)] = key.start_mark.line + 1
                walk(value, (*key_path, key.value))
                lines[(*key_path, key.value)] = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, (*key_path, i))

    if root is not None:
        walk(root, ())
    return data, lines


def _load_toml(path: Path, text: str) -> tuple[Any, dict[tuple, int]]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigFileError(f"{path}: not valid TOML: {err}") from None
    # tomllib keeps no positions: find each key's line by scanning the tables in order.
    lines: dict[tuple, int] = {}
    table: tuple = ()
    counts: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if match := re.fullmatch(r"\[\[\s*([\w.-]+)\s*\]\]", line):
            name = match.group(1)
            index = counts.get(name, 0)
            counts[name] = index + 1
            table = (*name.split("."), index)
            lines[table] = number
        elif match := re.fullmatch(r"\[\s*([\w.-]+)\s*\]", line):
            table = tuple(match.group(1).split("."))
            lines[table] = number
        elif match := re.match(r"([\w-]+)\s*=", line):
            lines[(*table, match.group(1))] = number
    return data, lines


class _Builder:
    def __init__(self, path: Path, lines: dict[tuple, int]) -> None:
        self.path = path
        self.lines = lines

    def fail(self, key_path: tuple, message: str) -> ConfigFileError:
        line = None
        probe = key_path
        while line is None and probe:
            line = self.lines.get(probe)
            probe = probe[:-1]
        where = f"{self.path}:{line}" if line else str(self.path)
        key = ".".join(str(k) if not isinstance(k, int) else f"[{k}]" for k in key_path)
        return ConfigFileError(f"{where}: {key.replace('.[', '[')}: {message}")

    def mapping(self, value: Any, key_path: tuple, allowed: set[str] | None) -> Mapping[str, Any]:
        """``value`` if it is a mapping of ``allowed`` keys (any keys: ``None``)."""
        if not isinstance(value, Mapping):
            raise self.fail(key_path, f"must be a mapping, got {type(value).__name__}")
        for key in () if allowed is None else value:
            if key not in allowed:
                raise self.fail(
                    (*key_path, key), f"unknown key; allowed: {', '.join(sorted(allowed))}"
                )
        return value

    def experiment(self, data: Any) -> Experiment:
        if data is None:
            raise self.fail(("settings",), "the file is empty")
        data = self.mapping(data, (), TOP_KEYS)
        if "settings" not in data:
            raise self.fail(("settings",), "missing: list at least one setting")
        settings = data["settings"]
        if not isinstance(settings, list) or not settings:
            raise self.fail(("settings",), "must be a non-empty list of settings")
        resources = self.mapping(data.get("resources", {}), ("resources",), RESOURCE_KEYS)
        kwargs: dict[str, Any] = {
            "name": data.get("name", self.path.stem),
            "settings": tuple(self.setting(s, ("settings", i)) for i, s in enumerate(settings)),
            **{
                k: data[k]
                for k in ("env", "env_config", "x_axis", "seeds_per_trial", "gamma")
                if k in data
            },
            **dict(resources),
        }
        if "epochs" in data:
            epochs = data["epochs"]
            kwargs["epochs"] = tuple(epochs) if isinstance(epochs, list) else epochs
        if "seeds" in data:
            kwargs["seeds"] = data["seeds"]
        if "env_config" in data:
            self.mapping(data["env_config"], ("env_config",), None)
        experiment = self.build(Experiment, kwargs, ())
        # The env id and its config, checked here, not first as the sweep starts, so that
        # their errors also name the line.
        try:
            envs.make_mdp_pair(experiment.env, experiment.env_config)
        except ConfigError as err:
            where = ("env",) if err.field == "env" else ("env_config", err.field)
            raise self.fail(where, str(err)) from None
        return experiment

    def setting(self, value: Any, key_path: tuple) -> Setting:
        value = self.mapping(value, key_path, SETTING_KEYS)
        if "label" not in value:
            raise self.fail((*key_path, "label"), "missing: every setting needs a label")
        kwargs: dict[str, Any] = {"label": str(value["label"]), "imm": value.get("imm", True)}
        if not isinstance(kwargs["imm"], bool):
            raise self.fail((*key_path, "imm"), f"must be true or false, got {kwargs['imm']!r}")
        if "lambda" in value and "lambda_ratio" in value:
            raise self.fail((*key_path, "lambda_ratio"), "give either lambda or lambda_ratio")
        if "lambda" in value and value["lambda"] != "rule":
            kwargs["lam"] = value["lambda"]
            if isinstance(kwargs["lam"], str):
                raise self.fail(
                    (*key_path, "lambda"),
                    f"must be 'rule' or a number >= 0, got {value['lambda']!r}",
                )
        if "lambda_ratio" in value:
            ratio = value["lambda_ratio"]
            if not checks.is_number(ratio, finite=False) or not 0 <= ratio < 1:
                raise self.fail((*key_path, "lambda_ratio"), f"must be in [0, 1), got {ratio!r}")
            kwargs["lam"] = ratio_to_lambda(ratio)
        if "target" in value:
            target = self.mapping(value["target"], (*key_path, "target"), TARGET_KEYS)
            kwargs["target"] = self.build(TargetSpec, dict(target), (*key_path, "target"))
        if "num_samples" in value:
            kwargs["num_samples"] = value["num_samples"]
        return self.build(Setting, kwargs, key_path)

    def build(self, cls: type, kwargs: dict[str, Any], key_path: tuple) -> Any:
        """Constructs ``cls``; a :class:`ConfigError` gets the line of the field it names
        (a resource's field is under ``resources``), any other ``ValueError`` the line of
        ``key_path``."""
        try:
            return cls(**kwargs)
        except ConfigError as err:
            field = (*key_path, err.field)
            if field not in self.lines and err.field in RESOURCE_KEYS:
                field = ("resources", err.field)
            raise self.fail(field, str(err)) from None
        except ValueError as err:
            raise self.fail(key_path, str(err)) from None
