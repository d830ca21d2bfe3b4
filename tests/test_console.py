"""The console filters drop exactly the library lines they name, on the loggers that emit
them, and let every other line of those loggers through."""

from __future__ import annotations

import logging

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
