"""Sweeps on a real three-node Ray cluster (a head without CPUs, two worker nodes with one
CPU each, the second declaring one GPU that torch cannot use): trials run in other
processes on other nodes, get their inputs through Ray's object store after the driver
deleted the input folders, say where they ran, and fall back to the CPU with a warning;
four trials share the one GPU at once.

Each driver runs in a process of its own, as ``imm-ray`` runs: this process keeps no Ray
of its own connected to the cluster.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from clusters import driver_env, start_cluster
from tiny_inputs import tiny_bert_folders, tiny_table2

from imm_ray.restricted.kneser_ney import estimate_kneser_ney
from imm_ray.supervised.lm.corpus import load_corpus
from imm_ray.supervised.lm.synthetic import MarkovSource
from imm_ray.supervised.lm.train import LMTrainer
from tuning.lm import LMExperiment, LMSetting

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def cluster():
    """A :func:`clusters.start_cluster` shared by this module's tests: its workers are a
    plain node and a GPU node, in this order."""
    with start_cluster(workers=0) as started:
        started.add_worker(cpus=1)
        started.add_worker(cpus=1, gpus=1)
        yield started


def rows_of(folder: Path) -> list[dict]:
    return [
        json.loads(line)
        for result in sorted(folder.glob("*/result.json"))
        for line in result.read_text().splitlines()
        if line.strip()
    ]


DRIVER = """
import json, shutil, sys
from pathlib import Path

from tuning.kinds import experiment_from_dict
from tuning.sweep import run_sweep

job = json.loads(sys.argv[1])
experiments = [experiment_from_dict(data) for data in job["experiments"]]
inputs = [experiment.load_inputs() for experiment in experiments]
for folder in job["delete"]:
    shutil.rmtree(folder)
for experiment, read in zip(experiments, inputs):
    run_sweep(experiment, Path(job["storage"]), address=job["address"], inputs=read)
"""


def test_lm_and_bert_sweeps_run_on_other_nodes_after_their_input_folders_are_gone(
    cluster, tmp_path
):
    data = tmp_path / "lm-data"
    MarkovSource.random(6, seed=5).write_corpus(data, (1500, 300, 300), seed=5)
    lm = LMExperiment(
        "lm",
        (LMSetting("IMM", "imm"), LMSetting("None", "none")),
        metrics=("valid_ppl", "test_ppl"),
        data=str(data),
        preset="tiny",
        overrides={"epochs": 2, "max_batches": 6},
        seeds=(0,),
    )
    bert_folders = tiny_bert_folders(tmp_path)
    bert = tiny_table2(*bert_folders)

    # What the trials must report: the same runs here, from the folders, on one thread.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        expected = {"lm": expected_lm(lm, data), "bert": expected_bert(bert, tmp_path)}
    finally:
        torch.set_num_threads(threads)

    storage = tmp_path / "results"
    job = {
        "experiments": [lm.to_dict(), bert.to_dict()],
        "delete": [str(data), *map(str, bert_folders)],
        "storage": str(storage),
        "address": cluster.address,
    }
    driver = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(job)],
        capture_output=True,
        text=True,
        timeout=300,
        env=driver_env(),
    )
    assert driver.returncode == 0, driver.stderr[-3000:]
    assert not data.exists() and not any(folder.exists() for folder in bert_folders)
    for name, values in expected.items():
        rows = rows_of(storage / name)
        reported = {(r["setting"], r["size"]): r["values"] for r in rows}
        assert {key: reported.get(key) for key in values} == values, name
        assert {(r["device"], r["gpu_unusable"]) for r in rows} == {("cpu", False)}
        # Two one-CPU trials at once: one on each worker node, none on the head.
        assert {r["node_id"] for r in rows} == {w.node_id for w in cluster.workers}, name


def expected_lm(lm: LMExperiment, data: Path) -> dict[tuple[str, int], dict[str, float]]:
    """``(curve, epoch) → {seed: value}`` of ``lm``'s one-seed trials, trained here."""
    corpus = load_corpus(data)
    bigram = estimate_kneser_ney(corpus.train, len(corpus.vocab), corpus.vocab.eos_id)
    expected = {}
    for setting in lm.settings:
        trainer = LMTrainer(lm.config(setting, 0), corpus, bigram)
        for epoch in (1, 2):
            expected[(f"{setting.label}, valid", epoch)] = {"0": trainer.train_epoch()["valid_ppl"]}
        expected[(f"{setting.label}, test", 2)] = {"0": trainer.evaluate(induced=False)["test_ppl"]}
    return expected


def expected_bert(bert, scratch: Path) -> dict[tuple[str, int], dict[str, float]]:
    """``(curve, last epoch) → {seed: 100 · MCC}`` of ``bert``'s one-seed trials, trained
    here."""
    from imm_ray.supervised.bert.finetune import finetune, prepare_run

    expected = {}
    for setting in bert.settings:
        run = prepare_run(bert.config(setting, 1))
        results = finetune(run, scratch / setting.method, save=True)
        for split in ("dev", "test"):
            expected[(f"{setting.label}, {split}", 2)] = {"1": 100 * results[f"{split}_mcc"]}
    return expected


def test_four_trials_share_the_gpu_node_at_once_train_on_its_cpu_and_the_driver_warns(
    cluster, tmp_path
):
    """A quarter of a GPU each: the node's one (logical) GPU holds all four trials, which
    train there at the same time (seen from the node's processes while they run; Tune's
    whole-second `timestamp` of a row cannot tell two-second trials apart)."""
    sweep = tmp_path / "gpu.yaml"
    sweep.write_text(
        textwrap.dedent(
            """\
            name: gpu
            epochs: [3]
            seeds: 2
            seeds_per_trial: 1
            settings:
              - label: No IMM
                imm: false
              - label: IMM
            """
        )
    )
    storage = tmp_path / "results"
    gpu = cluster.workers[1]
    command = [sys.executable, "-m", "imm_ray.cli", "sweep", str(sweep)]
    command += ["--storage", str(storage), "--address", cluster.address]
    command += ["--gpus-per-trial", "0.25", "--cpus-per-trial", "0.25"]
    with (tmp_path / "stderr.txt").open("w+") as stderr:
        driver = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=stderr, env=driver_env()
        )
        # How many trials train on the GPU node at once, at most: its processes are looked
        # at every 50 ms while the sweep runs (each trial trains for a second or more).
        at_once = 0
        deadline = time.monotonic() + 300
        while driver.poll() is None and time.monotonic() < deadline:
            at_once = max(at_once, cluster.training(gpu))
            time.sleep(0.05)
        driver.wait(timeout=10)
        stderr.seek(0)
        errors = stderr.read()
    assert driver.returncode == 0, errors[-3000:]
    gpu_node = gpu.node_id
    warnings = [line for line in errors.splitlines() if "imm-ray: warning:" in line]
    assert sorted(warnings) == sorted(
        f"imm-ray: warning: trial {setting} ({tag}) was given a GPU on node {gpu_node} "
        "(127.0.0.1) that torch cannot use (no CUDA device there); it trains on CPU"
        for setting, tag in (
            ("No IMM", "lam0_seeds0-0"),
            ("No IMM", "lam0_seeds1-1"),
            ("IMM", "lam0.25_seeds0-0"),
            ("IMM", "lam0.25_seeds1-1"),
        )
    )
    rows = rows_of(storage / "gpu")
    assert len(rows) == 4
    assert {(r["node_id"], r["device"], r["gpu_unusable"]) for r in rows} == {
        (gpu_node, "cpu", True)
    }
    assert at_once == 4
    shutil.rmtree(storage)
