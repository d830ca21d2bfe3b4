"""The ``imm-ray`` command as a user runs it: real subprocesses, real embedded Ray."""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from pathlib import Path

import pytest

from imm_ray.cli import build_parser, main


def imm_ray(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "imm_ray.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lam", "-1"], "--lam must be 'rule' or a finite number >= 0"),
        (["--lam", "inf"], "--lam must be 'rule' or a finite number >= 0"),
        (["--target", "softmax", "--temperature", "0"], "temperature must be > 0"),
        (["--epsilon", "1.5"], "epsilon must be in [0, 1]"),
        (["--grid-size", "1"], "size must be an integer >= 2"),
        (["--seeds", "5-2"], "--seeds must be a count N >= 1, a range like '0-9'"),
        (["--seeds", "0"], "--seeds must be a count N >= 1"),
        (["--env", "imm_ray/Nope-v0"], "unknown env id 'imm_ray/Nope-v0'"),
        (["--no-imm", "--env", "Nope-v0"], "unknown env id 'Nope-v0'"),
        (["--output", "/"], "--output must be a file path, got the folder '/'"),
        (["--output", "pyproject.toml/res.csv"], "--output: cannot write under 'pyproject.toml'"),
        (
            ["--env", "imm_ray/Taxi-v0", "--grid-size", "5"],
            "--grid-size applies only to --env imm_ray/ToroidalGrid-v0",
        ),
        (["--env", "imm_ray/TaxiPOMDP-v0"], "env must be an MDP id"),
    ],
)
def test_bad_input_exits_2_with_a_message_and_no_traceback(args, message):
    result = imm_ray("train", "rl", *args, timeout=60)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command path, its parser) of ``imm-ray`` and every command under it, read off the
    parser, so that a command added later is walked too."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*path, name))


COMMANDS = dict(_commands(build_parser()))


def _name(action: argparse.Action) -> str:
    """How argparse names an argument in its errors."""
    return "/".join(action.option_strings) or action.metavar or action.dest


def _given(action: argparse.Action, value: str = "x") -> list[str]:
    """``action`` on a command line, with as many ``value`` as it takes."""
    count = action.nargs if isinstance(action.nargs, int) else 1
    return [*action.option_strings[:1], *[value] * count]


def _rejects(action: argparse.Action, text: str) -> bool:
    """Whether argparse itself refuses ``text`` as the value of ``action``."""
    if action.choices is not None:
        return text not in action.choices
    if action.type is None:
        return False
    try:
        action.type(text)
    except (argparse.ArgumentTypeError, ValueError, TypeError):
        return True
    return False


def _argparse_error(capsys, argv: list[str]) -> str:
    """The message ``imm-ray ARGV`` fails with, in the one form of every bad input."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2, (argv, err)
    assert err.startswith("imm-ray: error: ") and err.count("\n") == 1, (argv, err)
    assert "usage:" not in out + err and "Traceback" not in out + err, (argv, err)
    return err


@pytest.mark.parametrize("path", COMMANDS, ids=lambda path: " ".join(path) or "imm-ray")
def test_every_commands_argparse_errors_take_the_one_error_form(path, capsys):
    """Each command's unknown option, unknown subcommand, missing argument, missing value,
    value its type or choices refuse and pair of exclusive options: argparse's own errors,
    each one line ``imm-ray: error: <field> ...`` naming the field, exit status 2."""
    parser = COMMANDS[path]
    takes_values = [a for a in parser._actions if a.nargs != 0]
    commands = [a for a in takes_values if isinstance(a, argparse._SubParsersAction)]
    if commands:
        assert f"{commands[0].metavar} is required" in _argparse_error(capsys, [*path])
        err = _argparse_error(capsys, [*path, "no-such-command"])
        assert f"{commands[0].metavar}: invalid choice: 'no-such-command'" in err
        return

    def given(*left_out: argparse.Action) -> list[str]:
        """The command with a placeholder for every required argument but ``left_out``."""
        required = [a for a in takes_values if a.required or not a.option_strings]
        return [*path, *(word for a in required if a not in left_out for word in _given(a))]

    err = _argparse_error(capsys, [*given(), "--no-such-option", "1"])
    assert "unrecognized arguments: --no-such-option 1" in err
    assert f"'{' '.join(['imm-ray', *path])} --help'" in err
    refused = 0
    for action in takes_values:
        if action.required or not action.option_strings:
            assert f"{_name(action)} is required" in _argparse_error(capsys, given(action))
        if not action.option_strings:
            continue
        option = action.option_strings[0]
        if action.nargs != argparse.OPTIONAL:  # one whose value may be left out (--mlflow)
            err = _argparse_error(capsys, [*given(action), option])
            assert f"{option}: expected " in err, err
        if _rejects(action, "not-a-value"):
            err = _argparse_error(capsys, [*given(action), *_given(action, "not-a-value")])
            assert err.startswith(f"imm-ray: error: {option}"), err
            refused += 1
    # A path to write takes any text, save one where something already is.
    assert refused or all(
        a.type in (None, str, Path) or getattr(a.type, "writes", None) for a in takes_values
    ), path
    for group in parser._mutually_exclusive_groups:
        first, second = group._group_actions[:2]
        err = _argparse_error(capsys, [*given(), *_given(first), *_given(second)])
        assert f"{second.option_strings[0]}: not allowed with argument" in err, err


def test_help_documents_every_option():
    result = imm_ray("train", "rl", "--help", timeout=60)
    assert result.returncode == 0
    rl = build_parser()._subparsers._group_actions[0].choices["train"]
    rl = rl._subparsers._group_actions[0].choices["rl"]
    options = [a for a in rl._actions if a.option_strings and a.dest != "help"]
    assert len(options) >= 14
    for action in options:
        assert action.help, f"{action.option_strings} has no help text"
        assert action.option_strings[0] in result.stdout
    # Each option's default is shown once, never twice or as "None".
    text = " ".join(result.stdout.split())
    for chunk in text.split(" --")[1:]:
        assert chunk.count("default") <= 1, chunk
    assert "(default: None)" not in text and "[default" not in text
    assert "(default: 50)" in text and "(default: 10)" in text and "(default: rule)" in text


def test_version_prints_the_package_version():
    from importlib.metadata import version

    result = imm_ray("--version", timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == f"imm-ray {version('imm-ray')}"


@pytest.mark.parametrize(
    ("args", "warning"),
    [
        (["--temperature", "0.5"], "--temperature has no effect with --target argmax"),
        (["--no-imm", "--lam", "0.3"], "--lam has no effect with --no-imm"),
        (["--no-imm", "--target", "softmax"], "--target has no effect with --no-imm"),
    ],
)
def test_an_option_without_effect_warns(args, warning, ray_session, capsys):
    # In this process, on the session's Ray (the other tests here run the command whole).
    code = main(["train", "rl", "--epochs", "1", "--seeds", "1", *args])
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"imm-ray: warning: {warning}" in err


def test_the_lambda_rule_says_where_it_turns_imm_off(ray_session, capsys):
    code = main(["train", "rl", "--epochs", "1", "700", "--seeds", "1", "--num-samples", "2"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "IMM is off there" in err and "r = 0 at 700 epochs" in err


def test_seeds_mean_the_same_in_train_and_sweep():
    rl = build_parser()._subparsers._group_actions[0].choices
    train = rl["train"]._subparsers._group_actions[0].choices["rl"]
    for parser in (train, rl["sweep"]):
        seeds = next(a for a in parser._actions if a.dest == "seeds").type
        assert seeds("3") == [0, 1, 2]
        assert seeds("2-4") == [2, 3, 4]
        assert seeds("7,1,4") == [1, 4, 7]
        assert seeds("5-5") == [5]
        # Each seed once, as a sweep file asks: a repeated seed is refused, not dropped.
        for text, twice in (("1,1,2", "seed 1"), ("0-3,2-5", "seeds 2, 3")):
            with pytest.raises(argparse.ArgumentTypeError) as refused:
                seeds(text)
            assert str(refused.value) == (
                f"--seeds must name each seed once, got {text!r} ({twice} more than once)"
            )


def test_train_on_taxi_compares_imm_and_no_imm(ray_session, capsys):
    code = main(["train", "rl", "--env", "imm_ray/Taxi-v0", "--compare", "--epochs", "2"])
    out = capsys.readouterr()
    assert code == 0, out.err
    body = [line.split() for line in out.out.splitlines()[2:4]]
    assert {(row[0], row[1]) for row in body} == {("2", "imm"), ("2", "no-imm")}
    assert all(-2000 < float(row[2]) <= 20 for row in body)  # whole 200-step episodes


def test_train_prints_a_table_and_writes_results(tmp_path):
    out = tmp_path / "res.csv"
    result = imm_ray(
        "train", "rl", "--compare", "--epochs", "2", "3", "--seeds", "2", "--output", str(out)
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["epochs", "method", "mean", "reward", "p10", "p90", "seeds"]
    body = [line.split() for line in lines[2:6]]
    assert {(row[0], row[1]) for row in body} == {
        ("2", "imm"),
        ("2", "no-imm"),
        ("3", "imm"),
        ("3", "no-imm"),
    }
    assert all(row[-1] == "2" for row in body)
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 8 and {r["method"] for r in rows} == {"imm", "no-imm"}


def test_train_rl_prints_the_same_table_whatever_its_seeds_per_trial(tmp_path, ray_session, capsys):
    # In this process, on the session's Ray (the test above runs the command whole).
    outputs = []
    for split in ([], ["--seeds-per-trial", "2"]):
        out = tmp_path / f"res{len(outputs)}.csv"
        args = ["--compare", "--epochs", "2", "3", "--seeds", "3", "--output", str(out)]
        code = main(["train", "rl", *args, *split])
        printed = capsys.readouterr()
        assert code == 0, printed.err
        outputs.append((printed.out.replace(str(out), "OUT"), out.read_text()))
    assert outputs[1] == outputs[0]


def test_sweep_seeds_per_trial_splits_rl_settings_and_is_refused_for_other_kinds(tmp_path):
    from imm_ray.cli import UsageError
    from imm_ray.cli.sweep import _experiment

    parser = build_parser()
    sweep = parser.parse_args(["sweep", "figure2", "--seeds", "10", "--seeds-per-trial", "4"])
    experiment = _experiment(sweep)
    assert experiment.seeds_per_trial == 4
    trials = experiment.trials()
    assert [t["seeds"] for t in trials if t["setting"] == trials[0]["setting"]] == [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
        [8, 9],
    ]
    logistic = parser.parse_args(["sweep", "figure1", "--seeds-per-trial", "4"])
    with pytest.raises(UsageError, match="--seeds-per-trial applies to RL experiments only"):
        _experiment(logistic)
    result = imm_ray("sweep", "figure1", "--seeds-per-trial", "4", "--storage", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "imm-ray: error: --seeds-per-trial applies to RL experiments only; figure1 is a "
        "logistic experiment"
    ]
    zero = imm_ray("sweep", "figure2", "--seeds-per-trial", "0", "--storage", str(tmp_path))
    assert zero.returncode == 2 and "--seeds-per-trial must be an integer >= 1" in zero.stderr


def test_planning_a_sweep_from_the_command_line_loads_neither_pytorch_nor_ray():
    # The driver parses, looks the experiment up and plans its trials before Ray starts.
    code = (
        "import sys; from imm_ray.cli import build_parser; from imm_ray.cli.sweep import "
        "_experiment; args = build_parser().parse_args(['sweep', 'figure2', '--seeds', '3']); "
        "experiment = _experiment(args); experiment.validate(); experiment.trials(); "
        "print(sorted(m for m in ('torch', 'ray', 'ray.rllib') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"
