"""The two RL paths side by side: 30-seed no-IMM means at several dataset sizes.

The general single-seed RLlib path (``Reinforce``, one Ray task per seed) and the
seed-vectorized path (``SeedReinforce``, every seed in one algorithm) train the same
configuration; their means over seeds should agree within sampling error, and their wall
times show what vectorizing buys.

    python benchmarks/rl_paths.py --seeds 30 --epochs 100 200 300
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import time

import numpy as np
import ray
import torch

from imm_ray.rl import ReinforceConfig, train_and_evaluate
from imm_ray.rl.seeds import SeedReinforceConfig, train_and_evaluate_seeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--epochs", type=int, nargs="+", default=[100, 200, 300])
    args = parser.parse_args()
    seeds = list(range(args.seeds))
    ray.init(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)

    start = time.perf_counter()
    task = ray.remote(num_cpus=1)(train_and_evaluate)
    configs = [ReinforceConfig().debugging(seed=s).imm(target=None) for s in seeds]
    single = ray.get([task.remote(config, args.epochs) for config in configs])
    single_wall = time.perf_counter() - start

    start = time.perf_counter()
    config = SeedReinforceConfig().training(seeds=seeds, epochs_per_iteration=50)
    vectorized = train_and_evaluate_seeds(config.imm(target=None), args.epochs)
    vectorized_wall = time.perf_counter() - start

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    print(f"{args.seeds} seeds, no IMM; mean eval reward ± standard error over seeds")
    print("| epochs | single-seed Reinforce | seed-vectorized SeedReinforce | gap / SE |")
    print("|---:|---:|---:|---:|")
    for epochs in args.epochs:
        a = np.array([result[epochs] for result in single])
        b = vectorized[epochs]
        se_a, se_b = a.std(ddof=1) / np.sqrt(len(a)), b.std(ddof=1) / np.sqrt(len(b))
        gap = (a.mean() - b.mean()) / np.hypot(se_a, se_b)
        print(
            f"| {epochs} | {a.mean():.2f} ± {se_a:.2f} | {b.mean():.2f} ± {se_b:.2f} | {gap:+.2f} |"
        )
    print(
        f"wall: single-seed {single_wall:.1f} s (2 CPUs), seed-vectorized {vectorized_wall:.1f} s"
    )


if __name__ == "__main__":
    main()
