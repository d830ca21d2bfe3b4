"""The sweep's progress lines, as Tune drives them: a first run, then a resumed one."""

from __future__ import annotations

import pickle
import re
import traceback
from dataclasses import dataclass, field

from ray.tune.experiment import Trial

from tuning.progress import REASON_CHARS, ProgressLines, failure_reason


@dataclass
class FakeTrial:
    """What ProgressLines reads of a Tune trial."""

    status: str
    config: dict = field(
        default_factory=lambda: {"trial": {"setting": "IMM", "tag": "lam0.25_seeds0-0"}}
    )


def counts(text: str) -> list[tuple[int, int, int]]:
    """(finished, total, elapsed seconds) of every progress line."""
    found = re.findall(r"^\[(\d+)/(\d+) trials, (\d+)s", text, re.M)
    return [tuple(map(int, line)) for line in found]


def test_a_resumed_sweep_counts_the_trials_it_has_left_and_times_from_the_resume(capsys):
    lines = ProgressLines(total=6, max_failures=2)
    stored = pickle.dumps(lines)  # Tune stores the callback as the sweep starts
    lines.setup()
    lines.on_step_begin(0, [FakeTrial(Trial.PENDING)] * 6)
    for _ in range(2):
        lines.on_trial_complete(0, [], FakeTrial(Trial.TERMINATED))
    assert [c[:2] for c in counts(capsys.readouterr().err)] == [(1, 6), (2, 6)]

    # --resume, a while later: Tune unpickles the callback, sets it up, restores the
    # trials (two finished, one errored) and steps.
    resumed = pickle.loads(stored)
    resumed.start -= 3600.0  # as if the sweep had started an hour before
    resumed.setup()
    done = [FakeTrial(Trial.TERMINATED)] * 2 + [FakeTrial(Trial.ERROR)]
    resumed.on_step_begin(0, done + [FakeTrial(Trial.PENDING)] * 3)
    resumed.on_step_begin(1, done + [FakeTrial(Trial.TERMINATED)] + [FakeTrial(Trial.PENDING)] * 2)
    for _ in range(2):
        resumed.on_trial_complete(0, [], FakeTrial(Trial.TERMINATED))
    resumed.on_trial_error(0, [], FakeTrial(Trial.ERROR))
    assert counts(capsys.readouterr().err) == [(1, 3, 0), (2, 3, 0), (3, 3, 0)]


#: What Tune wrote to a trial's error.txt when the trial's node died under it (a real run's
#: text, ids shortened): Ray's ActorDiedError, the line giving the cause among others.
NODE_DIED = """Failure # 1 (occurred at 2026-12-06_09-45-30)
The actor died unexpectedly before finishing this task.
\tclass_name: ImplicitFunc
\tactor_id: f5c6e70f1f2ea9f62f98e46701000000
\tpid: 15683
\tip: 127.0.0.1
The actor died because its node has died. Node Id: 029bba25ed5c
\tthe actor's node was terminated unexpectedly: health check failed
"""


@dataclass
class FailedTrial(FakeTrial):
    error_file: str | None = None
    storage: object = None


def test_a_failed_run_s_line_says_in_one_line_what_ended_it(tmp_path, capsys):
    import ray.exceptions

    error_file = tmp_path / "error.txt"
    error_file.write_text(NODE_DIED)
    lines = ProgressLines(total=2, max_failures=2)
    lines.on_trial_recover(0, [], FailedTrial(Trial.PENDING, error_file=str(error_file)))
    (line,) = capsys.readouterr().err.splitlines()
    assert line.endswith(
        "failed, retrying: IMM (lam0.25_seeds0-0): "
        "The actor died because its node has died. Node Id: 029bba25ed5c"
    )

    # Tune appends each failure: the latest one is reported. An exception raised in the
    # trainable reaches the driver as a RayTaskError holding the remote traceback.
    try:
        raise ValueError("lam must be finite, got nan")
    except ValueError as cause:
        task_error = ray.exceptions.RayTaskError(
            "ImplicitFunc.train", traceback.format_exc(), cause
        )
    with error_file.open("a") as handle:
        handle.write(f"Failure # 2 (occurred at 2026-12-06_09-46-01)\n{task_error}\n")

    class Storage:
        trial_dir_name = "rl_trainable_c09f3_00002_2_setting=IMM"

    lines.on_trial_error(
        0, [], FailedTrial(Trial.ERROR, error_file=str(error_file), storage=Storage())
    )
    (line,) = capsys.readouterr().err.splitlines()
    assert line.endswith(
        "errored after 2 retries: IMM (lam0.25_seeds0-0): "
        "ValueError: lam must be finite, got nan; "
        "traceback in rl_trainable_c09f3_00002_2_setting=IMM/error.txt"
    )


def test_a_failure_without_an_error_file_still_gets_its_line(capsys):
    lines = ProgressLines(total=1, max_failures=2)
    lines.on_trial_recover(0, [], FailedTrial(Trial.PENDING))
    assert capsys.readouterr().err.rstrip().endswith("failed, retrying: IMM (lam0.25_seeds0-0)")


def test_a_long_reason_is_cut_to_its_first_sentences(tmp_path):
    error_file = tmp_path / "error.txt"
    trial = FailedTrial(Trial.PENDING, error_file=str(error_file))
    # A real run's text, for a trial whose worker process was killed.
    error_file.write_text(
        "Failure # 1 (occurred at 2026-12-06_09-50-02)\n"
        "The actor died unexpectedly before finishing this task.\n\tclass_name: ImplicitFunc\n"
        "The actor is dead because its worker process has died. Worker exit type: SYSTEM_ERROR"
        " Worker exit detail: Worker unexpectedly exits with a connection error code 2. End of"
        " file. Some common causes include: (1) the process was killed by the OOM killer\n"
    )
    assert failure_reason(trial) == "The actor is dead because its worker process has died."
    # One sentence longer than a line is cut.
    error_file.write_text("Failure # 1 (occurred at now)\nRuntimeError: " + "x" * 1000 + "\n")
    reason = failure_reason(trial)
    assert reason.startswith("RuntimeError: xxx") and len(reason) == REASON_CHARS
    assert reason.endswith("…")
