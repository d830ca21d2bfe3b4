"""The ``imm-ray`` command: :func:`run` is the program, :func:`main` its commands without
the program's exit, :func:`build_parser` its parser (:mod:`imm_ray.cli.program`)."""

from imm_ray.cli.base import EXIT_INTERRUPTED, EXIT_USAGE, UsageError
from imm_ray.cli.program import build_parser, main, run

__all__ = ["EXIT_INTERRUPTED", "EXIT_USAGE", "UsageError", "build_parser", "main", "run"]
