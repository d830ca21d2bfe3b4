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
