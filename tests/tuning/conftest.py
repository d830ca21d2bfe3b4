"""Session fixtures of the sweeps that run on clusters (:mod:`cluster_runs`): their inputs,
written once, and their single-node runs, each run once however many tests compare with it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_runs import SingleNodeRuns, write_lm_data
from tiny_sweeps import TinySweeps


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
