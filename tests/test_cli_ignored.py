"""No option is ignored without a word: an option that only some ``--method`` values read,
given with another, is warned of before any work; the commands with a ``--method`` are
read off the parser, and each must say which of its options depend on the method."""

from __future__ import annotations

import pytest
from test_cli import COMMANDS
from test_lm_cli import run_main

from imm_ray.cli import train_bert, train_causal_lm, train_lm

TABLES = {
    ("train", "lm"): train_lm.METHOD_OPTIONS,
    ("train", "bert"): train_bert.METHOD_OPTIONS,
    ("train", "causal-lm"): train_causal_lm.METHOD_OPTIONS,
}
#: What else each command must be given.
REQUIRED = {
    ("train", "lm"): [],
    ("train", "bert"): ["--task", "acceptability", "--model", "tiny"],
    ("train", "causal-lm"): [],
}


def _option(path: tuple[str, ...], field: str):
    (action,) = [a for a in COMMANDS[path]._actions if a.dest == field and a.option_strings]
    return action


def _method_choices(path: tuple[str, ...]) -> list[str]:
    return list(_option(path, "method").choices)


def test_every_command_with_a_method_has_a_table_of_its_options_that_depend_on_it():
    with_method = {
        path
        for path, parser in COMMANDS.items()
        if any("--method" in a.option_strings for a in parser._actions)
    }
    assert with_method == set(TABLES)
    for path, table in TABLES.items():
        for field, methods in table.items():
            assert _option(path, field)  # an option of the command
            assert methods and set(methods) < set(_method_choices(path)), (path, field)


CASES = [
    (path, field, method, method not in methods)
    for path, table in TABLES.items()
    for field, methods in table.items()
    for method in _method_choices(path)
]


@pytest.mark.parametrize(
    ("path", "field", "method", "warned"),
    CASES,
    ids=[f"{' '.join(p)} {f} {m}" for p, f, m, _ in CASES],
)
def test_an_option_the_method_does_not_read_is_warned_of_before_any_work(
    tmp_path, capsys, path, field, method, warned
):
    action = _option(path, field)
    flag = action.option_strings[0]
    if action.nargs == 0:
        given = [flag]
    elif action.choices:
        given = [flag, next(iter(action.choices))]
    else:
        given = [flag, "0.5" if action.type is float else "3"]
    missing = tmp_path / "missing"
    # A data folder that is not there stops the command right after its checks.
    code, err = run_main(
        capsys, *path, *REQUIRED[path], "--data", str(missing), "--method", method, *given
    )
    assert code == 2
    warning = f"imm-ray: warning: {flag} has no effect with --method {method}"
    assert (warning in err.splitlines()) is warned, err
    assert not missing.exists()
