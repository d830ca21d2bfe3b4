"""The ``imm-ray`` command.

Its parser is built from one module a command (:mod:`imm_ray.cli.train_rl`,
:mod:`imm_ray.cli.sweep`, :mod:`imm_ray.cli.search`, :mod:`imm_ray.cli.lm`,
:mod:`imm_ray.cli.train_lm`, :mod:`imm_ray.cli.train_bert`); a command imports what it
runs (PyTorch, Ray) only when it runs, so that ``--help`` and a bad option answer at once.

Every option is checked before Ray starts: a bad value exits with status 2 and a one-line
message naming the option, never a traceback. So does a cluster that cannot be reached, or
that has no node able to run a trial (checked once Ray is up, before any trial starts).

SIGINT (Ctrl+C) ends every command with one line and exit status 130: the exact command
that resumes it where there is state to resume (``sweep``, ``train lm``), else that it was
interrupted.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from imm_ray import _compat
from imm_ray.cli.base import EXIT_INTERRUPTED, EXIT_USAGE, Parser, UsageError
from imm_ray.cli.lm import add_lm_commands
from imm_ray.cli.search import add_search
from imm_ray.cli.sweep import add_sweep_and_report
from imm_ray.cli.train_bert import add_bert_commands
from imm_ray.cli.train_causal_lm import add_train_causal_lm
from imm_ray.cli.train_lm import add_train_lm
from imm_ray.cli.train_rl import add_train_rl


def _package_version() -> str:
    try:
        return version("imm-ray")
    except PackageNotFoundError:
        return "unknown"


def build_parser() -> Parser:
    parser = Parser(
        prog="imm-ray",
        description="Induced Model Matching on Ray: restricted models help train full models.",
    )
    parser.add_argument("--version", action="version", version=f"imm-ray {_package_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train = commands.add_parser("train", help="train models")
    kinds = train.add_subparsers(dest="kind", required=True, metavar="KIND")
    add_train_rl(kinds)
    add_train_lm(kinds)
    add_train_causal_lm(kinds)
    add_bert_commands(kinds)
    add_sweep_and_report(commands)
    add_search(commands)
    add_lm_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "mlflow", None) is not None:
        _check_mlflow(parser)
    from imm_ray.cluster import plain_worker_lines, prefer_loopback
    from imm_ray.console import quiet_library_logs

    prefer_loopback(getattr(args, "address", None))  # before anything imports Ray
    plain_worker_lines()
    quiet_library_logs()
    try:
        return args.handler(args)
    except UsageError as err:
        parser.exit(EXIT_USAGE, f"imm-ray: error: {err}\n")
    except KeyboardInterrupt as interrupt:
        print(f"imm-ray: {_interrupted(argv, interrupt)}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED


def _check_mlflow(parser: Parser) -> None:
    """``--mlflow`` of any command, before it runs: MLflow (the ``tracking`` extra) must
    be installed; one line naming the extra and exit status 2 otherwise."""
    from imm_ray.tracking import TrackingError, require_mlflow

    try:
        require_mlflow()
    except TrackingError as err:
        parser.exit(EXIT_USAGE, f"imm-ray: error: {err}\n")


def _interrupted(argv: list[str], interrupt: KeyboardInterrupt) -> str:
    """What a command stopped by SIGINT says last: the exact command that resumes it, or
    restarts it where nothing was kept (:class:`~imm_ray.console.Interrupted`), else only
    that it was interrupted (a command that keeps no state, such as ``train rl``)."""
    resumable = getattr(interrupt, "resumable", None)
    if resumable is None:
        return "interrupted"
    if not resumable:
        return f"interrupted before anything was saved; start again with: {_command(argv)}"
    resume = argv if "--resume" in argv else [*argv, "--resume"]
    return f"interrupted; resume with: {_command(resume)}"


def _command(argv: list[str]) -> str:
    return shlex.join(["imm-ray", *argv])


def run() -> None:
    """The ``imm-ray`` program: :func:`main`, then a fast exit.

    Once a command has finished (its files written and closed, Ray shut down), Python's own
    teardown of the modules a sweep loads (Ray, Tune, pandas, matplotlib) still takes
    0.5–1 s; the program flushes its output and logs and leaves without it, only with the
    Ray and Python this was tested on (:func:`imm_ray._compat.fast_exit`). Where Ray is
    still up (a command that left it running), or on any other version, it exits the usual
    way (``sys.exit``), so that every exit hook runs.
    """
    code = main()
    ray = sys.modules.get("ray")
    if (ray is not None and ray.is_initialized()) or not _compat.fast_exit():
        sys.exit(code)
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(code or 0))
