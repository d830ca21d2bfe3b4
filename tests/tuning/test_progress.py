"""The sweep's progress lines, as Tune drives them: a first run, then a resumed one."""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass, field

from ray.tune.experiment import Trial

from tuning.progress import ProgressLines


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
