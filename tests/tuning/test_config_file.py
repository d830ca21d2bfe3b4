"""User sweep files: YAML and TOML read into the same Experiment; errors name key and line."""

from __future__ import annotations

import textwrap

import pytest

from tuning.config_file import ConfigFileError, load_experiment

YAML = """\
name: mine
epochs: [10, 50]
seeds: 3
resources: {cpus_per_trial: 0.5, gpus_per_trial: 0.25}
settings:
  - label: No IMM
    imm: false
  - label: IMM rule
    lambda: rule
  - label: IMM soft
    lambda_ratio: 0.2
    target: {kind: softmax, temperature: 0.5, epsilon: 0.1}
"""

TOML = """\
name = "mine"
epochs = [10, 50]
seeds = 3

[resources]
cpus_per_trial = 0.5
gpus_per_trial = 0.25

[[settings]]
label = "No IMM"
imm = false

[[settings]]
label = "IMM rule"
lambda = "rule"

[[settings]]
label = "IMM soft"
lambda_ratio = 0.2
target = { kind = "softmax", temperature = 0.5, epsilon = 0.1 }
"""


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize(("name", "text"), [("s.yaml", YAML), ("s.toml", TOML)])
def test_yaml_and_toml_give_the_same_experiment(tmp_path, name, text):
    experiment = load_experiment(write(tmp_path, name, text))
    assert experiment.name == "mine" and experiment.epochs == (10, 50) and experiment.seeds == 3
    assert (experiment.cpus_per_trial, experiment.gpus_per_trial) == (0.5, 0.25)
    no_imm, rule, soft = experiment.settings
    assert not no_imm.imm and rule.lam is None
    assert soft.lam == pytest.approx(0.25)
    assert (soft.target.kind, soft.target.temperature, soft.target.epsilon) == ("softmax", 0.5, 0.1)


@pytest.mark.parametrize(
    ("suffix", "old", "new", "where"),
    [
        ("yaml", "seeds: 3", "seeds: 0", "3: seeds: seeds must be a count >= 1"),
        ("yaml", "temperature: 0.5", "temperature: -1", "12: settings[2].target.temperature"),
        ("yaml", "lambda: rule", "lambda: often", "9: settings[1].lambda: must be 'rule'"),
        ("yaml", "    imm: false", "    imn: false", "7: settings[0].imn: unknown key"),
        ("yaml", "lambda_ratio: 0.2", "lambda_ratio: 1.0", "11: settings[2].lambda_ratio"),
        ("yaml", "gpus_per_trial: 0.25", "gpus_per_trial: -1", "4: resources"),
        ("toml", "seeds = 3", "seeds = 0", "3: seeds: seeds must be a count >= 1"),
        ("toml", 'label = "IMM rule"', 'labl = "IMM rule"', "14: settings[1].labl: unknown"),
        ("toml", "epsilon = 0.1", "epsilon = 2", "20: settings[2].target"),
    ],
)
def test_errors_name_the_key_and_the_line(tmp_path, suffix, old, new, where):
    """``where``: what the error says after the file's name and a colon."""
    original = YAML if suffix == "yaml" else TOML
    text = original.replace(old, new)
    assert text != original
    with pytest.raises(ConfigFileError) as error:
        load_experiment(write(tmp_path, f"s.{suffix}", text))
    assert f"s.{suffix}:{where}" in str(error.value)


def test_malformed_files_and_unknown_suffixes_fail_clearly(tmp_path):
    with pytest.raises(ConfigFileError, match=r"bad.yaml:2: not valid YAML"):
        load_experiment(write(tmp_path, "bad.yaml", "seeds: 3\n  bad: indent\n"))
    with pytest.raises(ConfigFileError, match="not valid TOML"):
        load_experiment(write(tmp_path, "bad.toml", "seeds = = 3\n"))
    with pytest.raises(ConfigFileError, match=r"must end in .yaml, .yml or .toml"):
        load_experiment(write(tmp_path, "s.json", "{}"))
    with pytest.raises(ConfigFileError, match="settings: missing"):
        load_experiment(write(tmp_path, "empty.yaml", "seeds: 3\n"))


FULL = """\
name: mine
env: imm_ray/ToroidalGrid-v0
env_config:
  size: 5
  reward_variance: 0.1
  trajectory_length: 20
epochs: [10, 50]
seeds: 3
seeds_per_trial: 3
gamma: 0.9
x_axis: epochs
resources:
  cpus_per_trial: 0.5
  gpus_per_trial: 0.25
settings:
  - label: No IMM
    imm: false
  - label: IMM rule
    lambda: rule
    num_samples: 4
  - label: IMM soft
    lambda_ratio: 0.2
    target:
      kind: softmax
      temperature: 0.5
      epsilon: 0.1
      solver: fib
      discount: 0.9
"""

ENV_CONFIG = "env_config:\n  size: 5\n  reward_variance: 0.1\n  trajectory_length: 20\n"
RESOURCES = "resources:\n  cpus_per_trial: 0.5\n  gpus_per_trial: 0.25\n"
TARGET = FULL[FULL.index("    target:") :]


def test_the_full_file_loads_and_its_env_config_reaches_the_experiment(tmp_path):
    experiment = load_experiment(write(tmp_path, "s.yaml", FULL))
    assert experiment.env_config == {"size": 5, "reward_variance": 0.1, "trajectory_length": 20}
    assert (experiment.seeds_per_trial, experiment.gamma) == (3, 0.9)
    assert experiment.settings[1].num_samples == 4
    assert (experiment.settings[2].target.solver, experiment.settings[2].target.discount) == (
        "fib",
        0.9,
    )


# (old text, new text, the key the error names, the start of its message, its line where
# that is not the line the new text starts on).
FULL_ERRORS = [
    ("name: mine", "name: my sweep", "name", "name must be a non-empty word", None),
    ("env: imm_ray/ToroidalGrid-v0", "env: imm_ray/Nope-v0", "env", "env: unknown env id", None),
    (
        "env: imm_ray/ToroidalGrid-v0",
        "env: imm_ray/ToroidalGridPOMDP-v0",
        "env",
        "env must be an MDP id",
        None,
    ),
    ("env: imm_ray/ToroidalGrid-v0", "env: [1]", "env", "env: unknown env id [1]", None),
    ("  size: 5", "  size: 1", "env_config.size", "size must be an integer >= 2", None),
    ("  size: 5", "  size: 5.5", "env_config.size", "size must be an integer >= 2", None),
    ("  size: 5", "  sise: 5", "env_config.sise", "unknown env_config key 'sise'", None),
    (
        "  reward_variance: 0.1",
        "  reward_variance: 0",
        "env_config.reward_variance",
        "reward_variance must be a finite number > 0",
        None,
    ),
    (
        "  trajectory_length: 20",
        "  trajectory_length: true",
        "env_config.trajectory_length",
        "trajectory_length must be an integer >= 1",
        None,
    ),
    (ENV_CONFIG, "env_config: 5\n", "env_config", "must be a mapping, got int", None),
    ("epochs: [10, 50]", "epochs: [10, 0]", "epochs", "epochs must be a non-empty list", None),
    ("epochs: [10, 50]", "epochs: 10", "epochs", "epochs must be a non-empty list", None),
    ("epochs: [10, 50]", "epochs: []", "epochs", "epochs must be a non-empty list", None),
    ("seeds: 3", "seeds: 0", "seeds", "seeds must be a count >= 1", None),
    ("seeds: 3", "seeds: [1, 1]", "seeds", "seeds must be a count >= 1 or a non-empty", None),
    ("seeds_per_trial: 3", "seeds_per_trial: 0", "seeds_per_trial", "seeds_per_trial must", None),
    ("gamma: 0.9", "gamma: 2", "gamma", "gamma must be a number in [0, 1], got 2", None),
    ("x_axis: epochs", "x_axis: steps", "x_axis", "x_axis must be one of epochs, lambda", None),
    ("x_axis: epochs", "x_axis: lambda_ratio", "x_axis", "x_axis 'lambda_ratio' needs", None),
    (
        "  cpus_per_trial: 0.5",
        "  cpus_per_trial: 0",
        "resources.cpus_per_trial",
        "cpus_per_trial must be a number > 0",
        None,
    ),
    (
        "  gpus_per_trial: 0.25",
        "  gpus_per_trial: -1",
        "resources.gpus_per_trial",
        "gpus_per_trial must be a number >= 0",
        None,
    ),
    ("  gpus_per_trial: 0.25", "  gpus: 1", "resources.gpus", "unknown key; allowed", None),
    (RESOURCES, "resources: 1\n", "resources", "must be a mapping, got int", None),
    ("x_axis: epochs", "x_axes: epochs", "x_axes", "unknown key; allowed: env,", None),
    ("settings:", "setting:", "setting", "unknown key; allowed", None),
    ("  - label: No IMM", "  - label: IMM rule", "settings", "settings labels must be unique", 15),
    ("  - label: No IMM", "  - label: ''", "settings[0].label", "label must be a non-empty", None),
    ("  - label: No IMM\n    imm", "  - imm", "settings[0].label", "missing: every setting", None),
    ("    imm: false", "    imm: no-thanks", "settings[0].imm", "must be true or false", None),
    ("    imm: false", "    imn: false", "settings[0].imn", "unknown key; allowed", None),
    (
        "  - label: No IMM\n    imm: false\n",
        "  - No IMM\n",
        "settings[0]",
        "must be a mapping, got str",
        None,
    ),
    ("    lambda: rule", "    lambda: often", "settings[1].lambda", "must be 'rule' or", None),
    ("    lambda: rule", "    lambda: -1", "settings[1].lambda", "lambda must be 'rule'", None),
    (
        "    lambda: rule",
        "    lambda: 1\n    lambda_ratio: 0.5",
        "settings[1].lambda_ratio",
        "give either lambda or lambda_ratio",
        20,
    ),
    (
        "    num_samples: 4",
        "    num_samples: 0",
        "settings[1].num_samples",
        "num_samples must be an integer >= 1",
        None,
    ),
    (
        "    lambda_ratio: 0.2",
        "    lambda_ratio: 1",
        "settings[2].lambda_ratio",
        "must be in",
        None,
    ),
    (TARGET, "    target: argmax\n", "settings[2].target", "must be a mapping, got str", None),
    (
        "      kind: softmax",
        "      kind: best",
        "settings[2].target.kind",
        "kind must be one of argmax, softmax, got 'best'",
        None,
    ),
    (
        "      kind: softmax",
        "      knd: softmax",
        "settings[2].target.knd",
        "unknown key; allowed",
        None,
    ),
    (
        "      temperature: 0.5",
        "      temperature: 0",
        "settings[2].target.temperature",
        "temperature must be > 0",
        None,
    ),
    (
        "      epsilon: 0.1",
        "      epsilon: 2",
        "settings[2].target.epsilon",
        "epsilon must be in [0, 1]",
        None,
    ),
    (
        "      solver: fib",
        "      solver: pbvi",
        "settings[2].target.solver",
        "solver must be one of fib, qmdp",
        None,
    ),
    (
        "      discount: 0.9",
        "      discount: 1",
        "settings[2].target.discount",
        "discount must be in (0, 1)",
        None,
    ),
]


@pytest.mark.parametrize(
    ("old", "new", "key", "message", "line"), FULL_ERRORS, ids=[e[1] for e in FULL_ERRORS]
)
def test_every_kind_of_error_names_the_file_the_line_and_the_key(
    tmp_path, old, new, key, message, line
):
    """Every field of a sweep file that can be wrong, env_config's keys and the env id
    among them: the error is ``FILE:LINE: KEY: message``, LINE the wrong field's line."""
    assert FULL.count(old) == 1
    text = FULL.replace(old, new)
    if line is None:
        line = text[: text.index(new)].count("\n") + 1
    path = write(tmp_path, "s.yaml", text)
    with pytest.raises(ConfigFileError) as error:
        load_experiment(path)
    assert str(error.value).startswith(f"{path}:{line}: {key}: {message}")


TOML_ENV = """\
name = "mine"
env = "imm_ray/ToroidalGrid-v0"
epochs = [10]

[env_config]
size = 5

[[settings]]
label = "No IMM"
imm = false
"""


@pytest.mark.parametrize(
    ("old", "new", "where"),
    [
        ("size = 5", "size = 1", "6: env_config.size: size must be an integer >= 2"),
        ("size = 5", "sise = 5", "6: env_config.sise: unknown env_config key 'sise'"),
        ('"imm_ray/ToroidalGrid-v0"', '"Nope-v0"', "2: env: env: unknown env id 'Nope-v0'"),
    ],
)
def test_toml_env_errors_name_the_line_too(tmp_path, old, new, where):
    path = write(tmp_path, "s.toml", TOML_ENV.replace(old, new))
    with pytest.raises(ConfigFileError) as error:
        load_experiment(path)
    assert str(error.value).startswith(f"{path}:{where}")
