"""One tiny sweep of each experiment kind through ``imm-ray sweep``, run once a session
however many tests read it: the kind's end-to-end test reads what it stored, and
``test_console_sweeps.py`` what it printed. Each logs to MLflow (``--mlflow``, its default
store ``STORAGE/mlflow.db``), which ``test_sweep_tracking.py`` reads back, so that the
console checks cover tracked sweeps too."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cluster_runs import table2
from sweep_drivers import imm_ray

#: A tiny RL sweep file: two settings × two epoch counts, three seeds one per trial.
SWEEP = """\
name: tiny
epochs: [3, 6]
seeds: 3
seeds_per_trial: 1
settings:
  - label: No IMM
    imm: false
  - label: IMM
"""


@dataclass
class TinySweep:
    """A finished run: its output and the storage it wrote to; ``trial_line``, a fragment
    of a line that shows in the console as its trials run (a worker's own line where the
    trainable prints one). ``stored``: each trial's ``result.json`` and the report's
    ``summary.csv`` and ``summary.md`` under the storage as the sweep left them, which
    every test reads; a test that edits rows or redraws the report does so on a copy
    (:meth:`changed_results` names any file changed since)."""

    result: subprocess.CompletedProcess
    storage: Path
    trial_line: str
    stored: dict[str, str] = field(default_factory=dict, repr=False)

    def changed_results(self) -> list[str]:
        """The stored files (relative to the storage) whose text is no longer what the
        sweep wrote, or that are gone or new."""
        now = _results(self.storage)
        return sorted(
            name
            for name in self.stored.keys() | now.keys()
            if self.stored.get(name) != now.get(name)
        )


#: The files a sweep leaves that tests read: its trials' rows and its report's tables.
STORED = ("result.json", "summary.csv", "summary.md")


def _results(storage: Path) -> dict[str, str]:
    """Each of the :data:`STORED` files under ``storage`` (relative path → text)."""
    return {
        str(p.relative_to(storage)): p.read_text()
        for name in STORED
        for p in sorted(storage.rglob(name))
    }


def _arguments(kind: str, root: Path, bert_data: Callable[[], tuple[Path, Path, Path]]):
    if kind == "rl":
        sweep = root / "tiny.yaml"
        sweep.write_text(SWEEP.replace("seeds: 3", "seeds: 2"))
        return [str(sweep)], "] done: IMM"
    if kind == "logistic":
        return ["table4", "--seeds", "12"], "] done: "
    if kind == "lm":
        from imm_ray.supervised.lm.synthetic import MarkovSource

        data = root / "data"
        MarkovSource.random(6, seed=5).write_corpus(data, (1500, 300, 300), seed=5)
        args = ["table1", "--seeds", "1", "--data", str(data), "--preset", "tiny"]
        return [*args, "--epochs", "1", "--max-batches", "12"], " seed 0 epoch 1/1: valid ppl "
    if kind == "causal-lm":
        from imm_ray.supervised.lm.synthetic import MarkovSource

        data = root / "data"
        MarkovSource.random(6, seed=5).write_corpus(data, (1500, 300, 300), seed=5)
        args = ["causal-lm", "--seeds", "1", "--data", str(data), "--preset", "tiny"]
        return [*args, "--epochs", "2"], " seed 0 epoch 1: valid ppl "
    if kind == "bert":
        return list(table2(*bert_data(), seeds=2, lr=None)), "+MLM+IMM seed 0: dev mcc "
    raise AssertionError(f"no tiny sweep for kind {kind!r}: add one to tiny_sweeps.py")


class TinySweeps:
    """kind → its :class:`TinySweep`, run on first use under ``root``, with Ray's console
    variables unset as a user's shell would leave them."""

    def __init__(self, root: Path, bert_data: Callable[[], tuple[Path, Path, Path]]) -> None:
        self.root, self.bert_data = root, bert_data
        self.runs: dict[str, TinySweep] = {}

    def __call__(self, kind: str) -> TinySweep:
        if kind not in self.runs:
            root = self.root / kind
            root.mkdir()
            args, trial_line = _arguments(kind, root, self.bert_data)
            unset = ("RAY_COLOR_PREFIX", "RAY_DEDUP_LOGS")
            env = {k: v for k, v in os.environ.items() if k not in unset}
            storage = root / "results"
            # Tracked in MLflow's default store (a bare --mlflow goes last).
            result = imm_ray("sweep", *args, "--storage", str(storage), "--mlflow", env=env)
            self.runs[kind] = TinySweep(result, storage, trial_line, _results(storage))
        return self.runs[kind]
