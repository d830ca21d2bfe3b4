"""Atomic writes (:mod:`imm_ray._io`): a write that fails, wherever it fails, leaves the old
file as it was and no temporary file beside it; for the helpers and for every writer of the
project that goes through them.

Failures are injected into the helper's own steps: the temporary file's write stops midway
(a full disk), or its rename over the target fails or is interrupted (Ctrl+C). Only the
target's write fails; the writer's other files are written as usual.
"""

from __future__ import annotations

import errno
import fnmatch
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from imm_ray import _io

MODES = ("write", "rename", "interrupt")


class _DiskFull:
    """A temporary file whose write stores half of its data, then fails as a full disk does."""

    def __init__(self, handle) -> None:
        self.handle = handle

    def __enter__(self) -> _DiskFull:
        return self

    def __exit__(self, *exc) -> None:
        self.handle.close()

    def write(self, data: bytes) -> int:
        self.handle.write(data[: len(data) // 2])
        self.handle.flush()
        raise OSError(errno.ENOSPC, "No space left on device (injected)")


@pytest.fixture
def fail_writes_of(monkeypatch):
    """``fail_writes_of(pattern, mode)`` makes the helper's write of every file whose name
    matches ``pattern`` fail in ``mode``; returns the list of failures it injected."""

    def arm(pattern: str, mode: str) -> list[str]:
        injected: list[str] = []
        real_mkstemp, real_fdopen, real_replace = tempfile.mkstemp, os.fdopen, os.replace
        doomed: set[int] = set()

        def mkstemp(*args, **kwargs):
            fd, tmp = real_mkstemp(*args, **kwargs)
            if fnmatch.fnmatch(kwargs.get("prefix", ""), f".{pattern}."):
                doomed.add(fd)
            return fd, tmp

        def fdopen(fd, *args, **kwargs):
            handle = real_fdopen(fd, *args, **kwargs)
            if fd not in doomed:
                return handle
            doomed.discard(fd)
            injected.append("write")
            return _DiskFull(handle)

        def replace(src, dst, *args, **kwargs):
            if not fnmatch.fnmatch(Path(dst).name, pattern):
                return real_replace(src, dst, *args, **kwargs)
            injected.append(mode)
            if mode == "interrupt":
                raise KeyboardInterrupt
            raise OSError(errno.EACCES, "Permission denied (injected)")

        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
        if mode == "write":
            monkeypatch.setattr(os, "fdopen", fdopen)
        else:
            monkeypatch.setattr(os, "replace", replace)
        return injected

    return arm


# Each writer: (tmp_path, markov) → (the file it writes, a call that writes it). The
# setup leaves an old version of the file where the writer would replace one.


def _helper_bytes(tmp_path, markov):
    target = tmp_path / "out" / "data.bin"
    _old(target)
    return target, lambda: _io.write_bytes_atomically(target, b"new" * 10_000)


def _helper_text(tmp_path, markov):
    target = tmp_path / "out" / "data.txt"
    _old(target)
    return target, lambda: _io.write_text_atomically(target, "nouveau λ\n" * 10_000)


def _location_bytes(tmp_path, markov):
    from tuning.storage import resolve

    target = tmp_path / "sweep" / "file.bin"
    _old(target)
    return target, lambda: resolve(target).write_bytes(b"new" * 10_000)


def _location_text(tmp_path, markov):
    from tuning.storage import resolve

    target = tmp_path / "sweep" / "file.txt"
    _old(target)
    return target, lambda: resolve(target).write_text("new\n" * 10_000)


def _storage_probe(tmp_path, markov):
    from tuning.storage import check_writable, resolve

    folder = tmp_path / "sweep"
    folder.mkdir()
    return folder / ".imm-ray-write-test-*", lambda: check_writable(resolve(folder))


def _tiny_sweep(folder: Path, epochs=(3,), stored=(3,)):
    """A stored one-trial RL sweep whose result.json holds the sizes ``stored``."""
    from tuning.report import save_experiment
    from tuning.rl import Experiment, Setting

    experiment = Experiment("tiny", (Setting("No IMM", imm=False),), epochs=epochs, seeds=1)
    folder.mkdir(parents=True)
    save_experiment(folder, experiment)
    (trial,) = experiment.trials()
    logdir = folder / f"t0_{trial['tag']}"
    logdir.mkdir()
    (logdir / "params.json").write_text(json.dumps({"trial": trial}))
    rows = [{"size": size, "values": {"0": float(size)}} for size in stored]
    (logdir / "result.json").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return experiment, trial, logdir


def _save_experiment(tmp_path, markov):
    from tuning.report import EXPERIMENT_FILE, save_experiment

    experiment, _, _ = _tiny_sweep(tmp_path / "tiny")
    target = tmp_path / "tiny" / EXPERIMENT_FILE
    target.write_text("{}")
    return target, lambda: save_experiment(target.parent, experiment)


def _report(name):
    def case(tmp_path, markov):
        from tuning.report import write_report

        _tiny_sweep(tmp_path / "tiny")
        target = tmp_path / "tiny" / name
        _old(target)
        return target, lambda: write_report(target.parent)

    return case


def _resume_state(tmp_path, markov):
    from tuning.resume import STATE_PREFIX, mend_before_resume
    from tuning.storage import resolve

    folder = tmp_path / "tiny"
    _, trial, logdir = _tiny_sweep(folder, epochs=(3, 6), stored=(3,))
    state = {"status": "TERMINATED", "config": {"trial": trial}, "relative_logdir": logdir.name}
    target = folder / f"{STATE_PREFIX}2026-01-01_00-00-00.json"
    target.write_text(json.dumps({"trial_data": [[json.dumps(state), "{}"]]}))
    return target, lambda: mend_before_resume(resolve(folder))


def _resume_kept_rows(tmp_path, markov):
    from tuning.report import EARLIER_RESULTS_PREFIX

    state, mend = _resume_state(tmp_path, markov)
    (logdir,) = [p for p in state.parent.iterdir() if p.is_dir()]
    return logdir / f"{EARLIER_RESULTS_PREFIX}001.json", mend  # none before


def _cli_output(tmp_path, markov):
    from imm_ray.cli.train_rl import _write_csv_atomically

    target = tmp_path / "res.csv"
    _old(target)
    rows = [("IMM", 0.25, seed, 10, 1.5) for seed in range(1000)]
    return target, lambda: _write_csv_atomically(target, rows)


def _lm_checkpoint(tmp_path, markov):
    from imm_ray.supervised.lm.train import CHECKPOINT_FILE, LMConfig, LMTrainer

    _, corpus, bigram = markov
    trainer = LMTrainer(LMConfig.preset("tiny", method="none"), corpus, bigram)
    target = tmp_path / "trial" / CHECKPOINT_FILE
    _old(target)
    return target, lambda: trainer.save(target.parent)


def _markov_corpus(tmp_path, markov):
    from imm_ray.supervised.lm.synthetic import MarkovSource

    target = tmp_path / "corpus" / "train.txt"
    _old(target)
    source = MarkovSource.random(7, seed=1)
    return target, lambda: source.write_corpus(target.parent, (3000, 500, 500), seed=1)


def _prepared_corpus(tmp_path, markov):
    from imm_ray.supervised.lm.corpus import prepare

    raw = tmp_path / "raw.txt"
    raw.write_text("".join(f"The cat {i} sat on the mat. " for i in range(40)))
    target = tmp_path / "out" / "valid.txt"
    _old(target)
    return target, lambda: prepare([raw], target.parent, vocab_size=5)


def _acceptability(tmp_path, markov):
    from imm_ray.supervised.bert.acceptability import make_acceptability

    folder, _, _ = markov
    target = tmp_path / "task" / "dev.tsv"
    _old(target)
    return target, lambda: make_acceptability(
        folder, target.parent, min_words=2, max_words=1000, max_examples=20
    )


def _arpa(tmp_path, markov):
    from imm_ray.restricted.arpa import write_arpa

    _, corpus, bigram = markov
    target = tmp_path / "bigram.arpa"
    _old(target)
    return target, lambda: write_arpa(bigram, corpus.vocab.words, target)


def _old(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"the old version\n")


WRITERS: dict[str, Callable] = {
    "_io.write_bytes_atomically": _helper_bytes,
    "_io.write_text_atomically": _helper_text,
    "storage.Location.write_bytes": _location_bytes,
    "storage.Location.write_text": _location_text,
    "storage.check_writable (probe)": _storage_probe,
    "report.save_experiment": _save_experiment,
    "report.write_report (csv)": _report("summary.csv"),
    "report.write_report (table)": _report("summary.md"),
    "report.write_report (plot)": _report("figure.png"),
    "resume.mend_before_resume (state)": _resume_state,
    "resume.mend_before_resume (kept rows)": _resume_kept_rows,
    "cli train rl --output": _cli_output,
    "lm LMTrainer.save": _lm_checkpoint,
    "lm MarkovSource.write_corpus": _markov_corpus,
    "lm corpus.prepare": _prepared_corpus,
    "bert make_acceptability": _acceptability,
    "arpa write_arpa": _arpa,
}


@pytest.fixture(scope="module")
def markov(tmp_path_factory):
    """A small corpus folder, the corpus and its Kneser–Ney bigram, for the LM writers."""
    from imm_ray.restricted.kneser_ney import estimate_kneser_ney
    from imm_ray.supervised.lm.corpus import load_corpus
    from imm_ray.supervised.lm.synthetic import MarkovSource

    folder = tmp_path_factory.mktemp("markov")
    MarkovSource.random(7, seed=1).write_corpus(folder, (3000, 500, 500), seed=1)
    corpus = load_corpus(folder)
    return folder, corpus, estimate_kneser_ney(corpus.train, len(corpus.vocab), corpus.vocab.eos_id)


def _files(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(
    writer, mode, tmp_path, markov, fail_writes_of
):
    target, write = WRITERS[writer](tmp_path, markov)
    before = _files(tmp_path)
    old = before.get(target)
    injected = fail_writes_of(target.name, mode)
    with pytest.raises((OSError, ValueError, KeyboardInterrupt)):
        write()
    assert injected == [mode], "the write must fail inside the helper"
    after = _files(tmp_path)
    assert after.get(target) == old  # the old version
    if old is None:  # or still none
        assert not [p for p in after if fnmatch.fnmatch(p.name, target.name)]
    leftover = sorted(str(p.relative_to(tmp_path)) for p in after if p not in before)
    assert not [name for name in leftover if name.endswith(".tmp")], leftover


@pytest.mark.parametrize("writer", list(WRITERS))
def test_every_writer_writes_through_the_helper(writer, tmp_path, markov, monkeypatch):
    # The writers above replace their file through _io's temporary file and rename (so
    # that the failures injected there are theirs), and leave no temporary file.
    target, write = WRITERS[writer](tmp_path, markov)
    renamed = []
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        renamed.append((Path(src).name, Path(dst).name))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    write()
    ours = [(src, dst) for src, dst in renamed if fnmatch.fnmatch(dst, target.name)]
    assert ours and all(src.startswith(f".{dst}.") and src.endswith(".tmp") for src, dst in ours)
    assert not list(tmp_path.rglob("*.tmp"))
    if "*" not in target.name:
        assert target.read_bytes() != b"the old version\n"


def test_the_helper_makes_the_folder_and_replaces_the_file(tmp_path):
    target = tmp_path / "a" / "b" / "c.txt"
    _io.write_text_atomically(target, "λ\n")
    assert target.read_bytes() == "λ\n".encode()
    _io.write_bytes_atomically(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in target.parent.iterdir()) == ["c.txt"]
