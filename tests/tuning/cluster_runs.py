"""Sweeps run on a cluster, compared with the same sweeps on one node.

Each experiment kind's sweep is given here once (:data:`FIGURE2`, :data:`FIGURE1`,
:func:`table1`, :func:`table2`): the job tests (``test_cluster_jobs.py``) submit them to a
two-node ``ray start`` cluster, the lost-node tests (``test_lost_nodes.py``) run them on a
``ray.cluster_utils.Cluster`` and kill a node or the driver, and both compare what they
got with the embedded single-node run of the same sweep (:class:`SingleNodeRuns`), which
runs once per session.

Every trial sets PyTorch to as many threads as it has CPUs (1 here) on the cluster and on
one node alike, so the supervised kinds compute the same floating-point operations in the
same order on either.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from clusters import sigint_default
from tiny_bert import TINY_BERT_TRAINING

from tuning.report import collect, read_trials

#: figure2, small: the paper's 15 dataset sizes (10 … 500 epochs), 4 seeds, one trial per
#: setting (2 trials).
FIGURE2 = ("figure2", "--seeds", "4")
#: figure1, reduced to 2 Monte Carlo runs (all 49 sizes: the CLI has no option for fewer,
#: and sweep files are RL only): 4 trials.
FIGURE1 = ("figure1", "--seeds", "2")


def table1(data: Path) -> tuple[str, ...]:
    """table1 on the tiny preset, one seed, 5 epochs of ``data`` (:func:`write_lm_data`):
    4 trials; the IMM one takes about a second per epoch on one core."""
    return ("table1", "--preset", "tiny", "--data", str(data), "--seeds", "1", "--epochs", "5")


def table2(
    corpus: Path, task: Path, model: Path, *, seeds: int = 1, lr: str | None = "3e-3"
) -> tuple[str, ...]:
    """table2 on a tiny checkpoint (:func:`tiny_inputs.tiny_bert_folders`), one seed, 2
    epochs: 3 trials. Too few examples to learn the task, so every MCC is 0: the losses its
    rows report (task, MLM, IMM) are what tell two runs apart. (``seeds`` more seeds; no
    ``lr``, table2's own learning rate.)"""
    inputs = ("--data", str(task), "--model", str(model), "--corpus", str(corpus))
    rate = () if lr is None else ("--lr", lr)
    return ("table2", "--seeds", str(seeds), *inputs, "--epochs", "2", *TINY_BERT_TRAINING, *rate)


def write_lm_data(folder: Path) -> Path:
    """A PTB-format folder from a 6-symbol Markov source: 6,000 training tokens."""
    from imm_ray.supervised.lm.synthetic import MarkovSource

    MarkovSource.random(6, seed=5).write_corpus(folder, (6000, 300, 300), seed=5)
    return folder


class SingleNodeRuns:
    """``imm-ray sweep ARGS`` on an embedded single-node Ray (no ``--address``, no
    ``RAY_ADDRESS``: a Ray of its own with this machine's CPUs), each distinct ``ARGS``
    run once under ``root``.

    A run starts in the background (:meth:`start`), so that a test runs it while its
    cluster run goes on: both wait on Ray's processes as much as they compute.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._runs: dict[tuple[str, ...], tuple[subprocess.Popen, Path]] = {}

    def start(self, *args: str) -> None:
        """Starts the run of ``ARGS`` unless it has started already."""
        if args in self._runs:
            return
        storage = self.root / f"run{len(self._runs)}"
        storage.mkdir()
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        with (storage / "output.txt").open("w") as output:
            run = subprocess.Popen(
                [sys.executable, "-m", "imm_ray.cli", "sweep", *args, "--storage", str(storage)],
                stdout=output,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=sigint_default,
            )
        self._runs[args] = (run, storage)

    def folder(self, *args: str) -> Path:
        """The results folder of the run of ``ARGS``, once it has ended (started now if not
        yet)."""
        self.start(*args)
        run, storage = self._runs[args]
        code = run.wait(timeout=600)
        assert code == 0, (storage / "output.txt").read_text()[-3000:]
        (folder,) = [path for path in storage.iterdir() if path.is_dir()]
        return folder

    def stop(self) -> None:
        """Stops the runs still going (a test that failed before it waited): SIGINT, on
        which ``imm-ray`` stops its Ray, then SIGKILL to the process group after 60 s."""
        for run, _ in self._runs.values():
            if run.poll() is not None:
                continue
            run.send_signal(signal.SIGINT)
            try:
                run.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(run.pid, signal.SIGKILL)
                run.wait()


#: Result-row keys that say where and when a row was reported, or are Tune's bookkeeping:
#: they differ between runs of the same sweep (``training_iteration`` and
#: ``iterations_since_restore`` differ too when a trial is restarted).
WHERE_AND_WHEN = frozenset(
    {
        "node_id",
        "device",
        "gpu_unusable",
        "timestamp",
        "date",
        "time_this_iter_s",
        "time_total_s",
        "time_since_restore",
        "iterations_since_restore",
        "training_iteration",
        "pid",
        "hostname",
        "node_ip",
        "trial_id",
        "checkpoint_dir_name",
        "should_checkpoint",
        "done",
        "config",
    }
)


def rows(folder: Path) -> list[dict[str, Any]]:
    """Every result row of every trial under ``folder``."""
    return [row for found in read_trials(folder) for row in found.rows]


def trained(folder: Path) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """(trial setting, trial tag) → what its rows report about training, in order: the
    per-seed values and every other metric (losses, perplexities, the learning rate), not
    where, when or how long (:data:`WHERE_AND_WHEN`, ``*_seconds``)."""
    return {
        (found.trial["setting"], found.trial["tag"]): [
            {k: v for k, v in row.items() if _trained(k)} for row in found.rows
        ]
        for found in read_trials(folder)
    }


def _trained(key: str) -> bool:
    return key not in WHERE_AND_WHEN and not key.endswith("_seconds")


def node_ids(folder: Path) -> set[str]:
    """The ``node_id`` of every result row under ``folder``."""
    return {row["node_id"] for row in rows(folder)}


def without_nodes_line(table: str) -> str:
    """``summary.md`` without its last line (how many trials ran on how many nodes)."""
    lines = table.rstrip("\n").splitlines()
    assert lines[-1].endswith(" nodes.") or lines[-1].endswith(" node."), lines[-1]
    return "\n".join(lines[:-1])


def assert_same_results(cluster: Path, single: Path, *, same_trials: bool = True) -> None:
    """The sweep in ``cluster`` gave what the single-node run in ``single`` gave: the same
    per-seed values, bit for bit (read from ``result.json``, not the CSV's 4 decimals), the
    same CSV, and the same table but for its nodes line; with ``same_trials`` (both sweeps
    planned the same trials), every trial's rows report the same metrics too."""
    assert collect(cluster) == collect(single)
    if same_trials:
        assert trained(cluster) == trained(single)
    assert (cluster / "summary.csv").read_text() == (single / "summary.csv").read_text()
    table, single_table = ((f / "summary.md").read_text() for f in (cluster, single))
    assert without_nodes_line(table) == without_nodes_line(single_table)


def assert_ran_on_nodes(folder: Path, count: int) -> None:
    """Every trial ran to the end, on ``count`` nodes together, and the table says so."""
    trials = [found for found in read_trials(folder) if found.rows]
    assert len(node_ids(folder)) == count, node_ids(folder)
    last = (folder / "summary.md").read_text().rstrip("\n").splitlines()[-1]
    assert last == f"{len(trials)} trials ran on {count} nodes.", last
    assert "Partial" not in (folder / "summary.md").read_text()
