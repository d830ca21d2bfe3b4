"""What ``imm-ray search`` found for the RL grid pair, beside fixed-λ grids trained here.

Usage::

    imm-ray search rl-lambda --num-samples 12 --storage S/optuna
    imm-ray search rl-lambda --num-samples 12 --scheduler asha --storage S/asha
    imm-ray search rl-lambda-pbt --storage S/pbt
    python benchmarks/lambda_search.py S

For every epoch count E in 50, 100, 200, 500 it trains the 30 seeds of the searches at
every fixed r in 0, 0.1, …, 0.9 for E epochs (the ``lambda-search`` grid, on the
seed-vectorized path) and at the paper's rule r(E) = round(−0.0002·E + 0.1891, 1), and
replays the PBT search's best schedule from scratch (which reproduces the member that
found it). It prints the mean reward over the seeds and its standard error for each, and
for each search its best r and reward beside the grid's at 50 epochs, with the epochs each
trained (seed-epochs: a trial stopped early by ASHA counts the epochs it trained).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

SEEDS = list(range(30))
EPOCHS = (50, 100, 200, 500)
GRID = [r / 10 for r in range(10)]


def rewards(schedule: list[list[float]], points: list[int]) -> dict[int, np.ndarray]:
    """Every seed's evaluation return at each of ``points`` under a λ ``schedule``
    (``[[from_epoch, λ], ...]``), trained from scratch."""
    from imm_ray.rl.seeds import SeedReinforceConfig
    from tuning.search import lambda_at

    config = SeedReinforceConfig().training(seeds=SEEDS, epochs_per_iteration=50).imm(lam=1.0)
    algo = config.build_algo()
    try:
        out = {}
        for point in sorted(points):
            # λ changes only at a schedule's entries: train segment by segment.
            while algo.epochs < point:
                lam = lambda_at(schedule, algo.epochs + 1)
                changes = [s for s, _ in schedule if algo.epochs < s < point]
                stop = min(changes) if changes else point
                algo.set_lambda(lam)
                algo.train_epochs(stop - algo.epochs)
            out[point] = algo.evaluate_seeds()
        return out
    finally:
        algo.stop()


def mean_se(values: np.ndarray) -> tuple[float, float]:
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(len(values)))


def search_cost(folder: Path, seeds: int) -> tuple[int, int]:
    """(trials, seed-epochs trained) of a stored search: each trial's last epoch count."""
    from tuning.search import read_search

    _, trials = read_search(folder)
    return len(trials), sum(t.time for t in trials) * seeds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("storage", type=Path, help="the folder holding optuna/, asha/, pbt/")
    args = parser.parse_args()
    import ray

    from imm_ray.imm.weighting import lambda_to_ratio, ratio_to_lambda
    from imm_ray.rl.lambda_rule import paper_lambda

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    start = time.perf_counter()
    grid = {r: rewards([[0, ratio_to_lambda(r)]], list(EPOCHS)) for r in GRID}
    rule = {e: rewards([[0, paper_lambda(e)]], [e])[e] for e in EPOCHS}
    print(f"fixed-λ grid and rule trained in {time.perf_counter() - start:.0f} s\n")
    print("| epochs | best fixed r | its reward | paper's rule r | its reward |")
    print("|---:|---:|---:|---:|---:|")
    best_fixed = {}
    for e in EPOCHS:
        r_best = max(GRID, key=lambda r: grid[r][e].mean())
        best_fixed[e] = mean_se(grid[r_best][e])
        m, se = best_fixed[e]
        rm, rse = mean_se(rule[e])
        print(
            f"| {e} | {r_best:.1f} | {m:.2f} ± {se:.2f} | "
            f"{lambda_to_ratio(paper_lambda(e)):.1f} | {rm:.2f} ± {rse:.2f} |"
        )
    print(
        "\nGrid at 50 epochs (r: mean ± SE):",
        ", ".join(
            f"{r:.1f}: {mean_se(grid[r][50])[0]:.2f} ± {mean_se(grid[r][50])[1]:.2f}" for r in GRID
        ),
    )
    grid_cost_50 = len(GRID) * 50 * len(SEEDS)
    grid_cost_full = len(GRID) * 400 * len(SEEDS)  # lambda-search: 50, 200, 400 along one run
    for name in ("optuna", "asha", "random"):
        folder = args.storage / name / "rl-lambda"
        if not folder.exists():
            continue
        best = json.loads((folder / "best.json").read_text())
        trials, cost = search_cost(folder, len(SEEDS))
        print(
            f"\n{name}: best r {best['r']:.3f} (λ {best['lambda']:.3f}), reward "
            f"{best['reward']:.2f} ± {best['reward_se']:.2f}; {trials} trials, {cost:,} "
            f"seed-epochs = {cost / grid_cost_50:.2f} × the grid's 50-epoch column "
            f"({grid_cost_50:,}), {cost / grid_cost_full:.2f} × lambda-search ({grid_cost_full:,})"
        )
    pbt = args.storage / "pbt" / "rl-lambda-pbt"
    if pbt.exists():
        best = json.loads((pbt / "best.json").read_text())
        schedule = best["schedule"]
        replay = rewards(schedule, list(EPOCHS))
        steps = ", ".join(f"r {lambda_to_ratio(lam):.3f} from {int(s)}" for s, lam in schedule)
        print(f"\nPBT best schedule: {steps}")
        print("| epochs | PBT schedule | paper's rule | best fixed r |")
        print("|---:|---:|---:|---:|")
        for e in EPOCHS:
            m, se = mean_se(replay[e])
            rm, rse = mean_se(rule[e])
            fm, fse = best_fixed[e]
            print(f"| {e} | {m:.2f} ± {se:.2f} | {rm:.2f} ± {rse:.2f} | {fm:.2f} ± {fse:.2f} |")
        lineage = {int(t): v for t, v in best["curve"]}
        same = all(abs(lineage[e] - float(replay[e].mean())) < 1e-4 for e in EPOCHS if e in lineage)
        print(f"replayed from scratch = the member's own rewards: {same}")
        trials, cost = search_cost(pbt, len(SEEDS))
        print(f"PBT: {trials} members, {cost:,} seed-epochs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
