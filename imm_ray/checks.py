"""The one validation layer of configs, sweep files and envs: each check refuses a bad value
with a :class:`ConfigError` that says ``<field> must be <allowed>, got <value>`` and carries
the field, so a sweep file's loader can point at the field's line instead of parsing the
message.

Bools are refused wherever a number is asked for (``True`` is an ``int`` to Python, never a
count or a rate to a config). Integers are Python ints, or also NumPy's with
``numpy=True``; numbers are ints and floats (any real, NumPy's included, with
``numpy=True``), finite unless ``finite=False``.

This module imports nothing but the standard library: ``imm-ray --help`` and sweep
planning import it without torch or Ray.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from numbers import Integral, Real
from typing import Any, NoReturn


class ConfigError(ValueError):
    """A value refused by a check; ``field`` names what was wrong (e.g. ``"epochs"``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def fail(field: str, value: Any, allowed: str) -> NoReturn:
    """Raises the one error form: ``{field} must be {allowed}, got {value!r}`` (as its own
    error, also when called while another is handled)."""
    raise ConfigError(field, f"{field} must be {allowed}, got {value!r}") from None


def is_integer(value: Any, *, numpy: bool = False) -> bool:
    """An int (any integral, NumPy's included, with ``numpy``), not a bool."""
    return not isinstance(value, bool) and isinstance(value, Integral if numpy else int)


def is_number(value: Any, *, numpy: bool = False, finite: bool = True) -> bool:
    """An int or a float (any real with ``numpy``), not a bool; finite unless ``finite``
    is false."""
    if isinstance(value, bool) or not isinstance(value, Real if numpy else int | float):
        return False
    return math.isfinite(value) or not finite


def integer(
    field: str,
    value: Any,
    minimum: int,
    *,
    optional: bool = False,
    numpy: bool = False,
    allowed: str | None = None,
) -> Any:
    """``value`` if it is an integer >= ``minimum`` (or ``None`` when ``optional``), else
    ``{field} must be {allowed}``, ``allowed`` defaulting to ``an integer >= {minimum}``."""
    if optional and value is None:
        return value
    if not is_integer(value, numpy=numpy) or value < minimum:
        fail(field, value, allowed or f"an integer >= {minimum}")
    return value


def number(
    field: str,
    value: Any,
    *,
    above: float | None = None,
    at_least: float | None = None,
    below: float | None = None,
    at_most: float | None = None,
    optional: bool = False,
    numpy: bool = False,
    finite: bool = True,
    allowed: str | None = None,
) -> Any:
    """``value`` if it is a number within the bounds given (``above`` < value,
    ``at_least`` <= value, value < ``below``, value <= ``at_most``), or ``None`` when
    ``optional``; else ``{field} must be {allowed}``, where ``allowed`` defaults to
    ``a number > 0``, ``a number in [0, 1)`` and the like, from the bounds (``None``
    passing is not mentioned: say it in ``allowed`` where it should be)."""
    if optional and value is None:
        return value
    ok = (
        is_number(value, numpy=numpy, finite=finite)
        and (above is None or value > above)
        and (at_least is None or value >= at_least)
        and (below is None or value < below)
        and (at_most is None or value <= at_most)
    )
    if not ok:
        fail(field, value, allowed or _number_text(above, at_least, below, at_most))
    return value


def _number_text(
    above: float | None,
    at_least: float | None,
    below: float | None,
    at_most: float | None,
) -> str:
    low, high = (
        (above if above is not None else at_least),
        (below if below is not None else at_most),
    )
    if low is not None and high is not None:
        left, right = "(" if above is not None else "[", ")" if below is not None else "]"
        text = f"a number in {left}{low:g}, {high:g}{right}"
    elif low is not None:
        text = f"a number {'>' if above is not None else '>='} {low:g}"
    elif high is not None:
        text = f"a number {'<' if below is not None else '<='} {high:g}"
    else:
        text = "a number"
    return text


def one_of(field: str, value: Any, allowed: Collection[Any]) -> Any:
    """``value`` if it is among ``allowed``, else ``{field} must be one of a, b, c``."""
    try:
        ok = value in allowed
    except TypeError:  # an unhashable value looked up in a set or a dict
        ok = False
    if not ok:
        fail(field, value, f"one of {', '.join(map(str, allowed))}")
    return value
