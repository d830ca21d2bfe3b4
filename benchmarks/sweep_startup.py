"""Wall time of ``imm-ray sweep figure2`` from a shell, Ray start-up included.

Runs ``imm-ray sweep figure2 --seeds 1`` and the full ``imm-ray sweep figure2`` (30 seeds)
``--repeats`` times each, alternating, every run in a fresh ``--storage`` folder and a
fresh process, exactly as a user types it. Prints each run's wall time with the 1-minute
load average before it and the time a fixed pure-Python loop takes just before it (a
shared VM's speed drifts by 20-30 % over minutes; the loop shows when), each round's
full − one seed difference (the two runs of a round are seconds apart), then the best and
the median of each. Quote the rounds and the load they ran at.

    python benchmarks/sweep_startup.py --repeats 5
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

IMM_RAY = Path(sys.executable).with_name("imm-ray")


def load_average() -> float:
    return os.getloadavg()[0]


def calibration() -> float:
    """Seconds of a fixed pure-Python loop: how fast this machine is right now."""
    start = time.perf_counter()
    sum(i * i for i in range(2_000_000))
    return time.perf_counter() - start


def time_sweep(args: list[str]) -> float:
    """Seconds of one ``imm-ray sweep figure2 ARGS`` in a fresh folder (fails loudly)."""
    storage = Path(tempfile.mkdtemp(prefix="sweep-startup-"))
    try:
        start = time.perf_counter()
        result = subprocess.run(
            [str(IMM_RAY), "sweep", "figure2", *args, "--storage", str(storage)],
            capture_output=True,
            text=True,
        )
        elapsed = time.perf_counter() - start
        if result.returncode != 0:
            raise SystemExit(f"imm-ray sweep figure2 {' '.join(args)} failed:\n{result.stderr}")
        return elapsed
    finally:
        shutil.rmtree(storage, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each (default 3)")
    parser.add_argument("--only-one-seed", action="store_true", help="skip the full sweep")
    args = parser.parse_args()
    import ray
    import torch

    print(
        f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"Ray {ray.__version__}"
    )
    variants = {"--seeds 1": ["--seeds", "1"]}
    if not args.only_one_seed:
        variants["full (30 seeds)"] = []
    times: dict[str, list[float]] = {name: [] for name in variants}
    for repeat in range(args.repeats):
        for name, extra in variants.items():
            load, loop = load_average(), calibration()
            elapsed = time_sweep(extra)
            times[name].append(elapsed)
            print(
                f"run {repeat + 1} {name}: {elapsed:.2f} s "
                f"(load before {load:.2f}, loop {loop:.3f} s)",
                flush=True,
            )
        if len(variants) == 2:
            one, full = (values[-1] for values in times.values())
            print(f"run {repeat + 1} full − one seed: {full - one:+.2f} s", flush=True)
    for name, values in times.items():
        print(f"{name}: best {min(values):.2f} s, median {statistics.median(values):.2f} s")
    if len(times) == 2:
        one, full = (min(v) for v in times.values())
        print(f"full − one seed (best against best): {full - one:+.2f} s")


if __name__ == "__main__":
    main()
