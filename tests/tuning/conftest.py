"""Session fixtures of the sweeps that run on clusters (:mod:`cluster_runs`): their inputs,
written once, and their single-node runs, each run once however many tests compare with it;
and a trainable run outside Tune (``tune_outside``)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from cluster_runs import SingleNodeRuns, write_lm_data
from tiny_sweeps import TinySweeps

import tuning.placement


@pytest.fixture(scope="session")
def single_node(tmp_path_factory) -> Iterator[SingleNodeRuns]:
    runs = SingleNodeRuns(tmp_path_factory.mktemp("single-node"))
    try:
        yield runs
    finally:
        runs.stop()


@pytest.fixture(scope="session")
def lm_data(tmp_path_factory) -> Path:
    """The PTB-format folder of :func:`cluster_runs.table1`."""
    return write_lm_data(tmp_path_factory.mktemp("lm-data"))


@pytest.fixture(scope="session")
def bert_data(tmp_path_factory) -> tuple[Path, Path, Path]:
    """``(corpus, task, model)`` of :func:`cluster_runs.table2`."""
    from tiny_inputs import tiny_bert_folders  # imports transformers: only when asked for

    return tiny_bert_folders(tmp_path_factory.mktemp("bert-data"))


@pytest.fixture(scope="session")
def tiny_sweeps(tmp_path_factory, request) -> TinySweeps:
    """The tiny sweep of each kind (:mod:`tiny_sweeps`), each run once a session."""
    return TinySweeps(
        tmp_path_factory.mktemp("tiny-sweeps"), lambda: request.getfixturevalue("bert_data")
    )


@pytest.fixture
def tune_outside(monkeypatch, tmp_path):
    """Runs a trainable outside Tune: its rows and (copied) checkpoints are kept, and
    ``restart[0]`` is the checkpoint it starts from."""
    from ray import tune

    kept: list[tuple[dict, str]] = []
    restart: list = [None]
    storage = SimpleNamespace(trial_driver_staging_path=str(tmp_path / "trial"))
    context = SimpleNamespace(get_storage=lambda: storage)

    def report(metrics, checkpoint=None):
        copy = str(tmp_path / f"checkpoint{len(kept)}")
        if checkpoint is not None:
            shutil.copytree(checkpoint.path, copy)
        kept.append((metrics, copy if checkpoint is not None else None))

    monkeypatch.setattr(tune, "get_context", lambda: context)
    monkeypatch.setattr(tune, "get_checkpoint", lambda: restart[0])
    monkeypatch.setattr(tune, "report", report)
    monkeypatch.setattr(tuning.placement, "node_id", lambda: "node-a")
    threads = torch.get_num_threads()
    yield kept, restart
    torch.set_num_threads(threads)
