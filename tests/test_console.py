"""The console filters drop exactly the library lines they name, on the loggers that emit
them, and let every other line of those loggers through."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from imm_ray.console import DROPPED, quiet_library_logs


class Caught(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.mark.parametrize(("name", "fragment"), DROPPED, ids=[f for _, f in DROPPED])
def test_each_dropped_line_is_dropped_and_its_logger_still_speaks(name, fragment):
    quiet_library_logs()
    quiet_library_logs()  # idempotent: one filter per logger
    logger = logging.getLogger(name)
    assert sum(type(f).__name__ == "_DropMessages" for f in logger.filters) == 1
    caught = Caught()
    logger.addHandler(caught)
    try:
        # As the library logs it: the fragment inside a longer, formatted message.
        logger.warning("before %s after (%d)", fragment, 3)
        logger.warning("something a user can act on, from %s", name)
    finally:
        logger.removeHandler(caught)
    assert caught.messages == [f"something a user can act on, from {name}"]


def test_every_dropped_logger_is_a_module_of_an_installed_library():
    """A logger name with a typo would filter nothing: each names an importable module."""
    import importlib

    for name, _ in DROPPED:
        importlib.import_module(name)


_FINALIZERS = """
import sys, weakref
from imm_ray.console import quiet_exit_in_finalizers
if sys.argv[1] == "quiet":
    quiet_exit_in_finalizers()
    quiet_exit_in_finalizers()  # a second call keeps one hook
class Thing:
    pass
def raise_(kind):
    def callback(_):
        raise kind("from a finalizer")
    return callback
for kind in (SystemExit, ValueError):
    thing = Thing()
    ref = weakref.ref(thing, raise_(kind))
    del thing  # the callback runs here, where Python cannot raise
print("still running")
"""


@pytest.mark.parametrize("quiet", [True, False])
def test_a_system_exit_in_a_finalizer_is_dropped_and_other_errors_still_reported(quiet):
    # Ray's SIGTERM handler raises SystemExit wherever a stopping worker is; in a weakref
    # callback Python prints a traceback instead, which reached the sweep's console.
    result = subprocess.run(
        [sys.executable, "-c", _FINALIZERS, "quiet" if quiet else "plain"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and result.stdout == "still running\n", result.stderr
    assert "ValueError: from a finalizer" in result.stderr
    assert ("SystemExit: from a finalizer" in result.stderr) is not quiet, result.stderr
    assert result.stderr.count("Exception ignored in") == (1 if quiet else 2)
