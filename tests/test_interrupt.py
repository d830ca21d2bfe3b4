"""SIGINT (Ctrl+C) as a user sends it, to real ``imm-ray`` subprocesses: every command ends
with one line and exit status 130, never a traceback; ``sweep`` and ``train lm`` name the
exact command that resumes them, and a resumed sweep counts and times what it has left."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from clusters import processes_under, sigint_default

from imm_ray.cli import EXIT_INTERRUPTED

#: What Tune and Ray print on SIGINT that imm-ray keeps off the console.
NOISE = (
    "Traceback",
    "Tuner.restore",
    "Failed to fetch metrics",
    "Stop signal",
    "KeyboardInterrupt",
)


class Driver:
    """``imm-ray ARGS`` in a subprocess of its own process group, its output read as it
    comes."""

    def __init__(self, *args: str, env: dict | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "imm_ray.cli", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,
            preexec_fn=sigint_default,
        )
        self.started = time.monotonic()
        self.chunks: dict[str, list[str]] = {"out": [], "err": []}
        self.readers = [
            threading.Thread(target=self._read, args=(stream, self.chunks[name]), daemon=True)
            for name, stream in (("out", self.process.stdout), ("err", self.process.stderr))
        ]
        for reader in self.readers:
            reader.start()

    @staticmethod
    def _read(stream, into: list[str]) -> None:
        for chunk in iter(lambda: stream.read(1), ""):
            into.append(chunk)

    @property
    def err(self) -> str:
        return "".join(self.chunks["err"])

    def wait_for(self, ready: Callable[[], bool], timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            assert self.process.poll() is None, f"exited early:\n{self.err[-3000:]}"
            assert time.monotonic() < deadline, f"not ready in time:\n{self.err[-3000:]}"
            time.sleep(0.05)

    def interrupt(self) -> None:
        """SIGINT to the driver's process group, as Ctrl+C in a terminal sends it."""
        os.killpg(self.process.pid, signal.SIGINT)

    def finish(self, timeout: float = 120) -> tuple[int, str, str]:
        try:
            code = self.process.wait(timeout=timeout)
        finally:
            if self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        for reader in self.readers:
            reader.join(timeout=10)
        return code, "".join(self.chunks["out"]), self.err


def imm_ray_command(line: str) -> list[str]:
    """The argv of the command an ``imm-ray: interrupted; ... with: imm-ray ...`` line gives."""
    command = shlex.split(line.split(" with: ", 1)[1])
    assert command[0] == "imm-ray"
    return command[1:]


@pytest.fixture
def ray_tmpdir():
    """A private Ray temp dir ($RAY_TMPDIR), short enough for Ray's unix socket paths: a
    process naming it after a command ended is a Ray that command left running."""
    path = Path(tempfile.mkdtemp(prefix="immray-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def environment(ray_tmpdir: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return {**env, "RAY_TMPDIR": str(ray_tmpdir)}


SWEEP = """\
name: tiny
epochs: [100, 200]
seeds: 4
seeds_per_trial: 1
settings:
  - label: No IMM
    imm: false
  - label: IMM
"""
TRIALS = 8  # 2 settings × 4 seeds
PROGRESS = re.compile(r"^\[(\d+)/(\d+) trials, (\d+)s", re.M)


def test_an_interrupted_sweep_reports_what_finished_and_resumes_counting_what_is_left(
    tmp_path, ray_tmpdir
):
    sweep = tmp_path / "tiny.yaml"
    sweep.write_text(SWEEP)
    storage = tmp_path / "results"
    args = ["sweep", str(sweep), "--storage", str(storage)]
    driver = Driver(*args, env=environment(ray_tmpdir))
    driver.wait_for(lambda: driver.err.count("] done: ") >= 3)
    driver.interrupt()
    code, out, err = driver.finish()

    assert code == EXIT_INTERRUPTED, err[-3000:]
    resume = f"imm-ray: interrupted; resume with: {shlex.join(['imm-ray', *args, '--resume'])}"
    assert err.splitlines()[-1] == resume
    for noise in NOISE:
        assert noise not in out + err, err[-3000:]
    # The partial report: the trials that finished, in the table printed and written.
    assert "| 100 |" in out and (storage / "tiny" / "summary.md").is_file()
    assert not processes_under(ray_tmpdir), "Ray was left running"
    done_before = err.count("] done: ")
    assert 3 <= done_before < TRIALS

    # The exact command given resumes the sweep: its progress counts the trials left and
    # times itself from the resume.
    start = time.monotonic()
    resumed = subprocess.run(
        [sys.executable, "-m", "imm_ray.cli", *imm_ray_command(resume)],
        capture_output=True,
        text=True,
        timeout=600,
        env=environment(ray_tmpdir),
    )
    seconds = time.monotonic() - start
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    progress = [tuple(map(int, found)) for found in PROGRESS.findall(resumed.stderr)]
    left = TRIALS - done_before
    assert [(done, total) for done, total, _ in progress] == [
        (done, left) for done in range(1, left + 1)
    ]
    assert all(elapsed <= seconds for _, _, elapsed in progress), (progress, seconds)
    rows = (storage / "tiny" / "summary.csv").read_text().splitlines()
    assert len(rows) == 5 and all(row.endswith(",4") for row in rows[1:])


def test_a_sweep_interrupted_as_ray_starts_ends_with_a_command_that_works(tmp_path, ray_tmpdir):
    sweep = tmp_path / "tiny.yaml"
    sweep.write_text(SWEEP)
    storage = tmp_path / "results"
    args = ["sweep", str(sweep), "--storage", str(storage)]
    driver = Driver(*args, env=environment(ray_tmpdir))
    # Ray's GCS is the first process the driver starts, in ray.init.
    driver.wait_for(lambda: any("gcs_server" in _cmdline(pid) for pid in _children(driver)))
    driver.interrupt()
    code, out, err = driver.finish()

    assert code == EXIT_INTERRUPTED, err[-3000:]
    *_, line = err.splitlines()
    for noise in NOISE:
        assert noise not in out + err, err[-3000:]
    assert not processes_under(ray_tmpdir), "Ray was left running"
    # Tune had not started: nothing is kept, and the same command starts the sweep.
    # (On a fast machine Tune may have saved its state first: then --resume continues it.)
    if "resume with:" in line:
        assert imm_ray_command(line) == [*args, "--resume"]
        assert list((storage / "tiny").glob("experiment_state*.json"))
    else:
        start_again = shlex.join(["imm-ray", *args])
        assert (
            line
            == f"imm-ray: interrupted before anything was saved; start again with: {start_again}"
        )
        assert not (storage / "tiny").exists()


def _children(driver: Driver) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if parent == driver.process.pid:
            pids.append(int(stat.parent.name))
    return pids


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def test_train_rl_interrupted_says_so_and_leaves_no_ray_running(ray_tmpdir):
    driver = Driver(
        "train",
        "rl",
        "--compare",
        "--epochs",
        "300",
        "--seeds",
        "2",
        "--seeds-per-trial",
        "1",
        env=environment(ray_tmpdir),
    )
    driver.wait_for(lambda: "1/4 trials, " in driver.err)
    driver.interrupt()
    code, out, err = driver.finish()
    assert code == EXIT_INTERRUPTED, err[-3000:]
    assert err.endswith("\nimm-ray: interrupted\n"), err[-3000:]
    for noise in NOISE:
        assert noise not in out + err, err[-3000:]
    assert not processes_under(ray_tmpdir), "Ray was left running"


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    """A small PTB-format corpus (an epoch in a fraction of a second at the tiny preset)
    and a large one (an epoch of many seconds)."""
    from imm_ray.supervised.lm.synthetic import MarkovSource

    folders = {}
    for name, sentences in (("small", 1500), ("large", 100_000)):
        folder = tmp_path_factory.mktemp(name)
        MarkovSource.random(6, seed=3).write_corpus(folder, (sentences, 300, 300), seed=3)
        folders[name] = folder
    return folders


def test_train_lm_interrupted_ends_with_the_command_that_resumes_it(corpora, tmp_path):
    folder = tmp_path / "ck"
    args = ["train", "lm", "--data", str(corpora["small"]), "--preset", "tiny"]
    args += ["--threads", "1", "--max-batches", "20", "--epochs", "1000"]
    args += ["--checkpoint-dir", str(folder)]
    driver = Driver(*args)
    driver.wait_for(lambda: "epoch 3/1000:" in driver.err)
    driver.interrupt()
    code, _, err = driver.finish()
    assert code == EXIT_INTERRUPTED, err[-3000:]
    resume = f"imm-ray: interrupted; resume with: {shlex.join(['imm-ray', *args, '--resume'])}"
    assert err.splitlines()[-1] == resume
    assert "Traceback" not in err

    # The command resumes from the last checkpoint (epoch 2 at least, never epoch 1), and
    # interrupted again gives the same command.
    again = Driver(*imm_ray_command(resume))
    again.wait_for(lambda: re.search(r"epoch \d+/1000:", again.err) is not None)
    again.interrupt()
    code, _, err = again.finish()
    assert code == EXIT_INTERRUPTED, err[-3000:]
    first = int(re.search(r"epoch (\d+)/1000", err).group(1))
    assert first >= 3, err[:500]
    assert err.splitlines()[-1] == resume


def test_train_lm_interrupted_before_its_first_checkpoint_says_to_start_again(corpora, tmp_path):
    folder = tmp_path / "ck"
    args = ["train", "lm", "--data", str(corpora["large"]), "--preset", "tiny"]
    args += ["--threads", "1", "--checkpoint-dir", str(folder)]
    driver = Driver(*args)
    driver.wait_for(lambda: "epoch 1/1 batch 20/" in driver.err)
    driver.interrupt()
    code, _, err = driver.finish()
    assert code == EXIT_INTERRUPTED, err[-3000:]
    assert err.splitlines()[-1] == (
        f"imm-ray: interrupted before anything was saved; start again with: "
        f"{shlex.join(['imm-ray', *args])}"
    )
    assert "Traceback" not in err
    assert not (folder / "checkpoint.pt").exists()
