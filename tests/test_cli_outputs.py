"""No command overwrites what is there. Every option that names what a command writes is
found on the parser (an option added later is walked too) and refused, before any work,
where something already is, leaving it as it was; the two that continue what they find
(a sweep's storage, an LSTM's checkpoint folder, a causal LM's output folder) do so only
with ``--resume``."""

from __future__ import annotations

import argparse

import pytest
from test_cli import COMMANDS
from test_lm_cli import run_main

#: What the tagged writers are: (command, option) → "file" or "folder".
WRITERS = {
    ("lm bigram", "--arpa"): "file",
    ("lm make-acceptability", "--out"): "folder",
    ("lm prepare", "--out"): "folder",
    ("train bert", "--output-dir"): "folder",
    ("train bert-pretrain", "--out"): "folder",
    ("train rl", "--output"): "file",
}

#: Writers that continue what they find with --resume, and refuse it without: the rest of
#: the command line, the folder's name under the option's path, and the refusal.
RESUMABLE = {
    ("sweep", "--storage"): (["figure2"], "figure2", "already holds results; pass --resume"),
    ("search", "--storage"): (
        ["rl-lambda"],
        "rl-lambda",
        "already holds results; pass --resume",
    ),
    ("train lm", "--checkpoint-dir"): (
        ["--data", "{tmp}", "--preset", "tiny"],
        "",
        "already holds a checkpoint; pass --resume",
    ),
    ("train causal-lm", "--output-dir"): (
        ["--data", "{tmp}", "--preset", "tiny"],
        "",
        "already holds files; pass --resume",
    ),
}


#: Options named like an output that a command reads.
READ_ONLY = {("train lm", "--arpa"), ("train causal-lm", "--arpa")}


def _writes(action: argparse.Action) -> str | None:
    return getattr(action.type, "writes", None)


def _looks_like_an_output(action: argparse.Action) -> bool:
    """An option whose name says it is written to (not read from)."""
    words = set(action.dest.split("_"))
    return bool(words & {"out", "output", "dir", "storage"}) or action.dest == "arpa"


def test_every_option_that_writes_is_tagged_or_continues_with_resume():
    found_tagged, found_named = {}, set()
    for path, parser in COMMANDS.items():
        for action in parser._actions:
            if not action.option_strings:
                continue
            key = (" ".join(path), action.option_strings[0])
            if _writes(action):
                found_tagged[key] = _writes(action)
            elif _looks_like_an_output(action) and key not in READ_ONLY:
                found_named.add(key)
    assert found_tagged == WRITERS
    assert found_named == set(RESUMABLE), "an output that is neither new-only nor resumable"


@pytest.mark.parametrize(("command", "option"), WRITERS, ids=[" ".join(k) for k in WRITERS])
@pytest.mark.parametrize("there", ["a file", "a folder that holds a file"])
def test_a_writer_refuses_a_target_that_holds_something_and_leaves_it(
    tmp_path, capsys, command, option, there
):
    target = tmp_path / "target"
    if there == "a file":
        target.write_bytes(b"written earlier\n")
        before = {target: target.read_bytes()}
    else:
        target.mkdir()
        (target / "notes.md").write_text("kept\n")
        before = {target / "notes.md": b"kept\n"}
    # The option is checked as it is parsed: the command's other arguments are not needed.
    code, err = run_main(capsys, *command.split(), option, str(target))
    assert code == 2
    assert err.startswith(f"imm-ray: error: {option}")
    assert len(err.strip().splitlines()) == 1, err
    kind = WRITERS[command, option]
    if kind == "file" and there == "a file":
        assert "exists; choose a new file" in err
    elif kind == "folder" and there == "a file":
        assert "is a file; give a folder" in err
    elif kind == "file":
        assert "must be a file path, got the folder" in err
    else:
        assert "is not empty" in err
    assert {path: path.read_bytes() for path in before} == before
    assert sorted(tmp_path.rglob("*")) == sorted({tmp_path / "target", *before})


@pytest.mark.parametrize(("command", "option"), RESUMABLE, ids=[" ".join(k) for k in RESUMABLE])
def test_a_resumable_writer_refuses_what_it_finds_without_resume(tmp_path, capsys, command, option):
    rest, under, refusal = RESUMABLE[command, option]
    target = tmp_path / "target"
    folder = target / under
    folder.mkdir(parents=True)
    kept = folder / ("checkpoint.pt" if command == "train lm" else "notes.md")
    kept.write_bytes(b"written earlier\n")
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "valid", "test"):
        (data / f"{split}.txt").write_text("a b c\nb c a\n")
    args = [*command.split(), *(arg.format(tmp=data) for arg in rest), option, str(target)]
    code, err = run_main(capsys, *args)
    assert code == 2
    assert err.startswith("imm-ray: error: ") and refusal in err
    assert kept.read_bytes() == b"written earlier\n"
    assert sorted(p.name for p in folder.iterdir()) == [kept.name]
