"""What every ``imm-ray`` command shares: its one error form, its one help style, the
warning of options its ``--method`` does not read, and the checks of a command that
trains with PyTorch in this process. (What a command writes is checked as its options are
read: :func:`imm_ray.cli.options.new_file`, :func:`~imm_ray.cli.options.new_folder`.)

A bad value is reported as ``imm-ray: error: <field> ...`` with exit status 2, never a
traceback: argparse's own errors by :class:`Parser`, a handler's by raising
:class:`UsageError` (or a :class:`ValueError`, under :func:`guarded`).
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
from typing import NoReturn

EXIT_USAGE = 2
#: A command stopped by SIGINT exits as a shell reports one killed by it (128 + 2).
EXIT_INTERRUPTED = 130


class UsageError(ValueError):
    """A bad command-line value; reported as ``imm-ray: error: ...`` with exit status 2."""


class HelpFormatter(argparse.HelpFormatter):
    """The one help style of every command: an option's default is stated once, as
    ``(default: X)`` at the end of its help, taken from the option where its help does not
    state it already; an option with no default to show (None, off, an empty list) states
    none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        default = action.default
        if (
            "(default" in help_text
            or default is None
            or default is False
            or default == []
            or default is argparse.SUPPRESS
            or not action.option_strings
        ):
            return help_text
        shown = " ".join(map(str, default)) if isinstance(default, list) else "%(default)s"
        return f"{help_text} (default: {shown})".lstrip()


#: argparse's prefix of an error about one argument: ``argument --lam: ...``.
_ARGUMENT_PREFIX = re.compile(r"^argument (\S+): ")
_REQUIRED = "the following arguments are required: "


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose own errors (a bad or missing value, an unknown choice or
    option, a missing argument) take the form of every other bad input: one line
    ``imm-ray: error: <field> ...`` and exit status 2, without argparse's usage text; its
    help is in :class:`HelpFormatter`'s style.

    Subparsers are made with the class of their parent (``add_subparsers``' default
    ``parser_class``), so every ``imm-ray`` command is one of these.
    """

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        # The deepest command chosen sets it last: unknown arguments, which the top-level
        # parser reports, name the command they were given to.
        self.set_defaults(_command_prog=self.prog)

    def parse_args(self, args=None, namespace=None) -> argparse.Namespace:
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            command = getattr(parsed, "_command_prog", self.prog)
            self.error(
                f"unrecognized arguments: {' '.join(extras)} ('{command} --help' lists its options)"
            )
        return parsed

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"imm-ray: error: {_one_form(message)}\n")


def _one_form(message: str) -> str:
    """argparse's ``argument --lam: --lam must be ...`` as ``--lam must be ...``, its
    ``argument --k: invalid int value: 'x'`` as ``--k: invalid int value: 'x'`` and
    ``the following arguments are required: --data`` as ``--data is required``."""
    match = _ARGUMENT_PREFIX.match(message)
    if match:
        name, rest = match.group(1), message[match.end() :]
        return rest if rest.startswith(name) else f"{name}: {rest}"
    if message.startswith(_REQUIRED):
        names = message[len(_REQUIRED) :].split(", ")
        return f"{', '.join(names)} {'is' if len(names) == 1 else 'are'} required"
    return message


def guarded(handler):
    """``handler`` with its ``ValueError`` turned into a :class:`UsageError` (exit 2)."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except ValueError as err:
            raise UsageError(str(err)) from None

    return run


def warn(message: str) -> None:
    print(f"imm-ray: warning: {message}", file=sys.stderr)


def warn_unused(args: argparse.Namespace, method: str, uses: dict[str, tuple[str, ...]]) -> None:
    """Warns of the options given that ``--method METHOD`` does not read: ``uses`` maps an
    option's field to the methods that read it (a command's table of them)."""
    unused = [
        "--" + field.replace("_", "-")
        for field, methods in uses.items()
        if method not in methods and getattr(args, field) not in (None, False)
    ]
    if unused:
        verb = "has" if len(unused) == 1 else "have"
        warn(f"{', '.join(unused)} {verb} no effect with --method {method}")


def note(message: str) -> None:
    print(f"imm-ray: note: {message}", file=sys.stderr)


def use_torch(threads: int | None, device: str) -> None:
    """For a command that trains in this process: PyTorch's CPU threads (``--threads``,
    torch's own number where None), and a check that a ``cuda`` ``--device`` is there;
    :class:`ValueError` naming the option otherwise."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA device is available")


def add_command(commands, name: str, handler, *, help: str, parents=(), guard: bool = True):
    """Adds the command ``name`` to the subparsers ``commands``: ``help`` is its line in
    the list of commands, ``handler``'s docstring its description, ``parents`` give it
    shared options, and ``handler`` runs it (under :func:`guarded` unless ``guard`` is
    False: a handler that turns its own errors into a :class:`UsageError`)."""
    parser = commands.add_parser(
        name, help=help, description=inspect.cleandoc(handler.__doc__), parents=list(parents)
    )
    parser.set_defaults(handler=guarded(handler) if guard else handler)
    return parser


def from_options(function, args: argparse.Namespace):
    """``function`` (a function, or a config dataclass) called with the options named as its
    parameters that were given (not None); its own defaults for the others."""
    names = inspect.signature(function).parameters
    given = {name: getattr(args, name, None) for name in names}
    return function(**{name: value for name, value in given.items() if value is not None})
