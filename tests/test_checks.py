"""The one validation layer: each check's message, the field its error carries, and what it
accepts (no bools, NumPy scalars only when asked, None only when optional)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from imm_ray import checks
from imm_ray.checks import ConfigError


@pytest.mark.parametrize(
    ("check", "field", "message"),
    [
        (lambda: checks.integer("k", 0, 1), "k", "k must be an integer >= 1, got 0"),
        (lambda: checks.integer("k", True, 1), "k", "k must be an integer >= 1, got True"),
        (lambda: checks.integer("k", 2.0, 1), "k", "k must be an integer >= 1, got 2.0"),
        (lambda: checks.integer("k", np.int64(3), 1), "k", "k must be an integer >= 1, got"),
        (lambda: checks.integer("k", None, 1), "k", "k must be an integer >= 1, got None"),
        (
            lambda: checks.integer("m", 0, 1, optional=True, allowed="an integer >= 1 or None"),
            "m",
            "m must be an integer >= 1 or None, got 0",
        ),
        (lambda: checks.number("lr", 0, above=0), "lr", "lr must be a number > 0, got 0"),
        (lambda: checks.number("lr", False, above=0), "lr", "lr must be a number > 0, got False"),
        (lambda: checks.number("x", float("nan")), "x", "x must be a number, got nan"),
        (lambda: checks.number("c", -1, at_least=0), "c", "c must be a number >= 0, got -1"),
        (lambda: checks.number("c", 2, at_most=1), "c", "c must be a number <= 1, got 2"),
        (
            lambda: checks.number("p", 1.0, at_least=0, below=1),
            "p",
            "p must be a number in [0, 1), got 1.0",
        ),
        (
            lambda: checks.number("d", 0, above=0, at_most=1),
            "d",
            "d must be a number in (0, 1], got 0",
        ),
        (
            lambda: checks.number("w", -1, at_least=0, below=float("inf")),
            "w",
            "w must be a number in [0, inf), got -1",
        ),
        (
            lambda: checks.number("t", 0, above=0, allowed="> 0"),
            "t",
            "t must be > 0, got 0",
        ),
        (lambda: checks.number("x", np.float32(0.5)), "x", "x must be a number, got"),
        (
            lambda: checks.one_of("kind", "best", ("argmax", "softmax")),
            "kind",
            "kind must be one of argmax, softmax, got 'best'",
        ),
        (lambda: checks.one_of("kind", [], {"a"}), "kind", "kind must be one of a, got []"),
        (lambda: checks.fail("seeds", 0, "a count >= 1"), "seeds", "seeds must be a count >= 1"),
    ],
)
def test_a_refused_value_names_its_field_in_the_error_and_the_message(check, field, message):
    with pytest.raises(ConfigError) as error:
        check()
    assert error.value.field == field
    assert str(error.value).startswith(message)
    assert isinstance(error.value, ValueError)


def test_accepted_values_come_back_unchanged():
    assert checks.integer("k", 3, 1) == 3
    assert checks.integer("k", np.int32(3), 1, numpy=True) == 3
    assert checks.integer("k", None, 1, optional=True) is None
    assert checks.number("x", 0.5, above=0, below=1) == 0.5
    assert checks.number("x", np.float32(0.5), above=0, numpy=True) == 0.5
    assert checks.number("x", float("inf"), finite=False) == float("inf")
    assert checks.number("x", None, above=0, optional=True) is None
    assert checks.one_of("kind", "softmax", ("argmax", "softmax")) == "softmax"


def test_an_error_raised_while_handling_another_does_not_carry_it():
    try:
        try:
            raise RuntimeError("inner")
        except RuntimeError:
            checks.fail("device", "tpu", "cpu or cuda")
    except ConfigError as error:
        assert error.__suppress_context__ and error.__cause__ is None


def test_importing_the_checks_imports_neither_numpy_nor_torch():
    code = "import sys, imm_ray.checks; print(sorted({'numpy', 'torch', 'ray'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
