"""Seeds across nodes: a many-seed figure2 on a cluster of 1 and of 2 worker nodes.

In one run, for each cluster size, starts the test suite's cluster (``tests/clusters.py``:
``ray.cluster_utils.Cluster`` on 127.0.0.1, a head with 0 CPUs plus worker nodes of 1 CPU)
and runs the figure2 sweep (No IMM and IMM argmax under the λ rule, the paper's 15
dataset sizes) with ``--seeds`` seeds split into trials of ``--seeds-per-trial``, from a
sweep file, as a user's ``imm-ray sweep FILE --address ...`` in a fresh process. Cluster
start-up is excluded, the driver's own start-up and report are included. Prints each
run's wall time, where it went, the speed-up of 2 worker nodes over 1, and whether every
seed's value (from the trials' ``result.json``) is the same on both.

Where the time went, per run: the driver until the first trial starts training, the span
from then to the last trial's end, and the driver's report and exit after it; each worker
node's share of that span spent inside trials (a trial's training seconds, imports in a
fresh worker included); and CPU-seconds of the driver, of Ray's own processes (GCS,
raylets, agents, dashboard, monitors) and of the trials' worker processes, sampled from
/proc once a second. A machine with fewer cores than worker nodes plus one runs them all
on shared cores: say so beside the figures. Two trials at once may each run slower than
one alone (shared caches and memory bandwidth); the report says by how much, and what
speed-up that leaves two nodes at most.

    python benchmarks/cluster_seeds.py                  # 2,000 seeds, 250 per trial
    python benchmarks/cluster_seeds.py --seeds 400 --seeds-per-trial 50
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from imm_ray.cluster import prefer_loopback

prefer_loopback()  # the test clusters run in Ray's single-machine mode: before Ray loads

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from clusters import descendants, driver_env, start_cluster  # noqa: E402

from tuning.config_file import load_experiment  # noqa: E402
from tuning.rl import EXPERIMENTS  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def sweep_file(folder: Path, seeds: int, seeds_per_trial: int, epochs: list[int]) -> Path:
    """figure2's settings and sizes with ``seeds`` seeds in trials of ``seeds_per_trial``."""
    figure2 = EXPERIMENTS["figure2"]
    path = folder / "figure2-seeds.yaml"
    lines = [
        "name: figure2-seeds",
        f"epochs: {epochs}",
        f"seeds: {seeds}",
        f"seeds_per_trial: {seeds_per_trial}",
        "settings:",
        "  - label: No IMM",
        "    imm: false",
        f"  - label: {figure2.settings[1].label}",
    ]
    path.write_text("\n".join(lines) + "\n")
    loaded = load_experiment(path)
    assert loaded.settings == figure2.settings, "the sweep file is not figure2's settings"
    return path


class CpuSampler:
    """CPU-seconds of every process under ``roots``, read from /proc once a second (the
    last reading of a process that has since exited counts)."""

    def __init__(self, roots: set[int]) -> None:
        self.roots = roots
        self.seconds: dict[int, float] = {}
        self.kinds: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._start = self._read()

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._read()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self._read()

    def _read(self) -> dict[int, float]:
        now = {}
        for pid in self.roots | descendants(self.roots):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except (OSError, IndexError):  # exited meanwhile
                continue
            now[pid] = (int(stat[11]) + int(stat[12])) / TICK
            # A worker process names itself ray::<what it runs> once it is up.
            worker = cmdline.startswith("ray::") or "default_worker.py" in cmdline
            if worker or pid not in self.kinds:
                self.kinds[pid] = "trial workers" if worker else "ray"
        self.seconds.update(now)
        return now

    def used(self) -> dict[str, float]:
        """CPU-seconds since the sampler was made: Ray's own processes, trial workers."""
        totals = {"ray": 0.0, "trial workers": 0.0}
        for pid, seconds in self.seconds.items():
            kind = self.kinds.get(pid, "ray")
            totals[kind] += seconds - self._start.get(pid, 0.0)
        return totals


def run(workers: int, sweep: Path) -> dict:
    """One sweep on a fresh cluster of ``workers`` worker nodes; its figures and values."""
    storage = Path(tempfile.mkdtemp(prefix="cluster-seeds-"))
    try:
        with start_cluster(workers=workers, cpus=1) as cluster:
            load, loop = os.getloadavg()[0], calibration()
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            with CpuSampler(cluster.processes()) as cpu:
                started = time.time()
                result = subprocess.run(
                    [sys.executable, "-m", "imm_ray.cli", "sweep", str(sweep)]
                    + ["--address", cluster.address, "--storage", str(storage)],
                    capture_output=True,
                    text=True,
                    env=driver_env(),
                )
                ended = time.time()
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if result.returncode != 0:
                raise SystemExit(f"sweep on {workers} worker node(s) failed:\n{result.stderr}")
            folder = storage / "figure2-seeds"
            trials = read_trials(folder)
            nodes = cluster.nodes_of_trials(folder)
        driver_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        first = min(t["start"] for t in trials.values())
        last = max(t["end"] for t in trials.values())
        busy = sum(t["seconds"] for t in trials.values())
        node_ends: dict[str | None, float] = {}
        for name, ids in nodes.items():
            for node in ids:
                node_ends[node] = max(node_ends.get(node, 0.0), trials[name]["end"])
        per_setting: dict[str, list[float]] = {}
        for t in trials.values():
            per_setting.setdefault(t["setting"], []).append(t["seconds"])
        return {
            "workers": workers,
            "wall": ended - started,
            "load": load,
            "loop": loop,
            "to_first_trial": first - started,
            "trials_span": last - first,
            "after_last_trial": ended - last,
            "trial_seconds": busy,
            "busy_share": busy / (workers * (last - first)) if last > first else 1.0,
            "tail": last - min(node_ends.values()),
            "trial_means": {k: statistics.mean(v) for k, v in per_setting.items()},
            "trials": len(trials),
            "nodes_used": len({n for ids in nodes.values() for n in ids}),
            "cpu": {"driver": driver_cpu, **cpu.used()},
            "values": read_values(folder),
        }
    finally:
        shutil.rmtree(storage, ignore_errors=True)


def read_trials(folder: Path) -> dict[str, dict]:
    """Trial → its setting, training seconds and (wall clock) start and end, from
    ``result.json`` (Tune stamps each result to the second)."""
    trials = {}
    for result in folder.glob("*/result.json"):
        rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        seconds = rows[-1]["time_total_s"]
        end = max(row["timestamp"] for row in rows)
        setting = rows[0]["config"]["trial"]["setting"]
        trials[result.parent.name] = {
            "seconds": seconds,
            "start": end - seconds,
            "end": end,
            "setting": setting,
        }
    return trials


def read_values(folder: Path) -> dict[tuple[str, int, str], float]:
    """(setting, epochs, seed) → the seed's value, as the trials reported it."""
    values = {}
    for result in folder.glob("*/result.json"):
        for line in result.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                setting = row["config"]["trial"]["setting"]
                for seed, value in row["values"].items():
                    values[(setting, row["size"], seed)] = value
    return values


SCALING_PROBE = """
import time, torch
torch.set_num_threads(1)
x = torch.randn(250, 121, 32)
start = time.perf_counter()
for _ in range(4000):
    torch.tanh(x).sum()
print(time.perf_counter() - start)
"""


def parallel_scaling() -> tuple[float, float]:
    """Seconds of a fixed single-threaded torch loop alone, and of two copies at once (in
    separate processes): how much of a second core this machine gives two busy trials."""

    def timed(copies: int) -> float:
        probes = [
            subprocess.Popen(
                [sys.executable, "-c", SCALING_PROBE], stdout=subprocess.PIPE, text=True
            )
            for _ in range(copies)
        ]
        return max(float(p.communicate()[0]) for p in probes)

    return timed(1), timed(2)


def calibration() -> float:
    """Seconds of a fixed pure-Python loop: how fast this machine is right now."""
    start = time.perf_counter()
    sum(i * i for i in range(2_000_000))
    return time.perf_counter() - start


def machine() -> str:
    import ray
    import torch

    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{platform.machine()} {model}, {os.cpu_count()} cores, {memory:.0f} GiB, "
        f"torch {torch.__version__}, Ray {ray.__version__}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2000)
    parser.add_argument("--seeds-per-trial", type=int, default=250)
    parser.add_argument(
        "--epochs", type=int, nargs="+", default=list(EXPERIMENTS["figure2"].epochs)
    )
    parser.add_argument("--repeats", type=int, default=1, help="rounds of 1 then 2 nodes")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="cluster-seeds-sweep-"))
    try:
        sweep = sweep_file(folder, args.seeds, args.seeds_per_trial, args.epochs)
        command = "python benchmarks/cluster_seeds.py " + " ".join(sys.argv[1:])
        date = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        print(f"{date}, {machine()}, commit {commit}", flush=True)
        print(f"command: {command.strip()}", flush=True)
        alone, pair = parallel_scaling()
        print(
            f"a fixed torch loop: {alone:.2f} s alone, {pair:.2f} s as two copies at once "
            f"(two cores give {2 * alone / pair:.2f}× one core's throughput)",
            flush=True,
        )
        runs: dict[int, list[dict]] = {1: [], 2: []}
        for _ in range(args.repeats):
            for workers in (1, 2):
                runs[workers].append(run(workers, sweep))
                print(row(runs[workers][-1]), flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    report(runs, args)


def row(r: dict) -> str:
    cpu = r["cpu"]
    return (
        f"| {r['workers']} | {r['wall']:.1f} s | {r['to_first_trial']:.1f} s | "
        f"{r['trials_span']:.1f} s | {r['after_last_trial']:.1f} s | "
        f"{r['trial_seconds']:.0f} s ({100 * r['busy_share']:.0f} %) | {r['tail']:.0f} s | "
        f"{cpu['driver']:.1f} / {cpu['ray']:.1f} / {cpu['trial workers']:.0f} | "
        f"{r['trials']} on {r['nodes_used']} | {r['load']:.2f} / {r['loop']:.3f} s |"
    )


def report(runs: dict[int, list[dict]], args: argparse.Namespace) -> None:
    print()
    print(
        f"{args.seeds} seeds in trials of {args.seeds_per_trial} "
        f"({len(runs[1][0]['values'])} seed values), figure2's 2 settings × "
        f"{len(args.epochs)} sizes; worker nodes of 1 CPU, head 0 CPUs:"
    )
    print()
    print(
        "| worker nodes | wall | driver to first trial | trials span | after last trial "
        "| in trials (share of span × nodes) | one node idle at the end "
        "| CPU-s driver / Ray / trial workers | trials on nodes | load before / loop |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---|---|---|")
    for workers in (1, 2):
        for r in runs[workers]:
            print(row(r))
    one = [r["wall"] for r in runs[1]]
    two = [r["wall"] for r in runs[2]]
    print()
    print(
        f"speed-up, 2 worker nodes over 1: {statistics.median(one) / statistics.median(two):.2f}×"
        f" (medians {statistics.median(one):.1f} s / {statistics.median(two):.1f} s; goal ≥ 1.6×)"
    )
    alone = statistics.median(r["trial_seconds"] for r in runs[1])
    together = statistics.median(r["trial_seconds"] for r in runs[2])
    print(
        f"seconds in trials, all trials: {alone:.0f} s one at a time, {together:.0f} s two at "
        f"once ({together / alone:.2f}× longer: two nodes can give at most "
        f"{2 * alone / together:.2f}× here)"
    )
    for workers in (1, 2):
        for r in runs[workers]:
            means = ", ".join(f"{k} {v:.1f} s" for k, v in sorted(r["trial_means"].items()))
            print(f"mean trial seconds, {workers} worker node(s): {means}")
    reference = runs[1][0]["values"]
    for r in runs[1][1:] + runs[2]:
        same = sum(r["values"].get(key) == value for key, value in reference.items())
        differs = len(reference) - same + len(r["values"].keys() - reference.keys())
        print(
            f"per-seed values, {r['workers']} worker node(s) against the first 1-node run: "
            f"{same}/{len(reference)} identical, {differs} differ or missing"
        )


if __name__ == "__main__":
    main()
