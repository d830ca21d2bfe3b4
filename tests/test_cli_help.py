"""Every ``imm-ray`` command's ``--help``, the commands read off the parser (a command added
later is walked too): one help style, each option's default stated once, as
``(default: X)``, and never as ``(default: None)``; and ``--help`` loads neither PyTorch nor
Ray."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys

import pytest
from test_cli import COMMANDS

from imm_ray.cli import main
from imm_ray.cli.base import HelpFormatter

#: A default in another style than ``(default: X)``: ``[0.2]``, ``[preset: 0.2]`` at the end.
_BRACKETED = re.compile(r"\[[^\]]*\]\s*$")


def _shows_a_default(action: argparse.Action) -> bool:
    """Whether the option has a default of its own to state (not None, off or empty)."""
    default = action.default  # 0 is a default to state: compared by identity, not ==
    return not any(default is nothing for nothing in (None, False, argparse.SUPPRESS)) and (
        default != []
    )


def _folded(text: str) -> str:
    """``text`` without white space: as help wraps it, at spaces or after a hyphen."""
    return "".join(text.split())


@pytest.mark.parametrize("path", COMMANDS, ids=lambda path: " ".join(path) or "imm-ray")
def test_every_commands_help_states_each_default_once_in_one_style(path, capsys):
    parser = COMMANDS[path]
    with pytest.raises(SystemExit) as exit_info:
        main([*path, "--help"])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 0 and not err, err
    assert "(default: None)" not in out and "%(default)" not in out
    formatter = parser._get_formatter()
    for action in parser._actions:
        if not action.option_strings or isinstance(action, argparse._HelpAction):
            continue
        name = action.option_strings[0]
        shown = formatter._expand_help(action) if action.help else ""
        assert _folded(shown) in _folded(out), (path, name)
        assert shown.count("default") <= 1, (path, name, shown)
        assert not _BRACKETED.search(shown), (path, name, shown)
        if _shows_a_default(action):
            assert "(default: " in shown, (path, name, shown)
    assert parser.formatter_class is HelpFormatter, path


@pytest.mark.parametrize("args", [["--help"], ["train", "bert", "--help"]])
def test_help_loads_neither_pytorch_nor_ray(args):
    # -X importtime lists every module the command imports (on stderr).
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "imm_ray.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and "usage: imm-ray" in result.stdout, result.stderr[-2000:]
    imported = {
        line.rsplit("|", 1)[1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "imm_ray.cli.train_bert" in imported
    assert not {"torch", "ray", "transformers", "tuning"} & imported
