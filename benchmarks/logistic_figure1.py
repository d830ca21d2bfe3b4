"""The logistic Figure 1 workload, in process: time per method, and the step budget check.

Part 1 trains 300 Monte Carlo runs at each of n = 2 … 50 (14 700 runs) for every Figure 1
method on one thread, as the Tune trials do (without Ray), and reports wall time and
run-steps per second. Part 2 checks the 500-step budget: mean test accuracy after 500 and
after 2000 full-batch GD steps, same runs.

    python benchmarks/logistic_figure1.py            # then: time imm-ray sweep figure1
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import time

import torch

from imm_ray.supervised.logistic import Method, Problem, train_and_score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--check-sizes", type=int, nargs="+", default=[2, 10, 30, 50])
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    problem, sizes = Problem(), list(range(2, 51))
    print(f"part 1: {args.runs} runs x n = 2..50, one thread")
    for name in ("imm", "noising", "interpolation", "baseline", "serialized"):
        start = time.perf_counter()
        train_and_score([Method(name=name)], problem, sizes, args.runs)
        seconds = time.perf_counter() - start
        steps = args.runs * len(sizes) * Method().max_steps
        print(f"  {name:13s} {seconds:6.1f} s   {steps / seconds:12.0f} run-steps/s")
    print("part 2: mean test accuracy (%) after 500 vs 2000 steps")
    for name in ("imm", "baseline", "noising", "serialized"):
        short, long = (
            train_and_score(
                [dataclasses.replace(Method(name=name), max_steps=steps)],
                problem,
                args.check_sizes,
                args.runs,
            )[0]
            for steps in (500, 2000)
        )
        cells = "  ".join(
            f"n={n}: {short[n].mean():.2f} -> {long[n].mean():.2f}" for n in args.check_sizes
        )
        print(f"  {name:10s} {cells}")


if __name__ == "__main__":
    main()
