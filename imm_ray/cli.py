"""The ``imm-ray`` command.

``imm-ray train rl`` trains MDP policies on the toroidal grid with and/or without IMM from
the POMDP policy, one Ray task per (seed, λ), and prints the evaluation table. Without
``--address`` (or ``RAY_ADDRESS``) it starts an embedded Ray sized to this machine; with
one, it joins that cluster, which is also what ``ray job submit -- imm-ray ...`` runs.

Every option is checked before Ray starts: a bad value exits with status 2 and a one-line
message naming the option, never a traceback.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from imm_ray.lm_cli import add_lm_commands

EXIT_USAGE = 2


class UsageError(ValueError):
    """A bad command-line value; reported as ``imm-ray: error: ...`` with exit status 2."""


def _seeds(text: str) -> list[int]:
    """``"0-9"``, ``"1,4,7"`` or ``"3"`` → a list of non-negative seeds."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            first, last = int(lo), int(hi) if hi else int(lo)
            if first < 0 or last < first:
                raise ValueError
            seeds.extend(range(first, last + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--seeds must look like '0-9', '1,4,7' or '3' with seeds >= 0, got {text!r}"
        ) from None
    return sorted(set(seeds))


def _positive_int(name: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise argparse.ArgumentTypeError(f"{name} must be an integer >= 1, got {text!r}")
        return value

    return parse


def _lam(text: str) -> float | None:
    if text == "rule":
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(
            f"--lam must be 'rule' or a finite number >= 0, got {text!r}"
        )
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imm-ray",
        description="Induced Model Matching on Ray: restricted models help train full models.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train = commands.add_parser("train", help="train models")
    kinds = train.add_subparsers(dest="kind", required=True, metavar="KIND")
    rl = kinds.add_parser(
        "rl",
        help="REINFORCE on the toroidal grid, with IMM from the POMDP's FIB policy",
        description=(
            "Train MDP policies with REINFORCE on RLlib, with IMM from the POMDP policy "
            "(paper Sec. 7.3, App. D.3), and print mean evaluation rewards over seeds "
            "with 10th/90th percentiles."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    rl.add_argument(
        "--epochs",
        type=_positive_int("--epochs"),
        nargs="+",
        default=[50],
        help="dataset sizes: epochs of one 50-step trajectory each; each is evaluated",
    )
    rl.add_argument(
        "--seeds",
        type=_seeds,
        default=_seeds("0-9"),
        help="seeds to train, e.g. '0-9' or '1,4,7'; statistics are across seeds",
    )
    methods = rl.add_mutually_exclusive_group()
    methods.add_argument("--no-imm", action="store_true", help="train without IMM only")
    methods.add_argument(
        "--compare", action="store_true", help="train both with and without IMM, side by side"
    )
    rl.add_argument(
        "--target",
        choices=["argmax", "softmax"],
        default="argmax",
        help="restricted policy P̂(a|x): best action at the uniform belief, or softmax(U/T)",
    )
    rl.add_argument(
        "--temperature",
        type=float,
        default=1.0,
        help="softmax temperature T > 0 (with --target softmax); larger is lower quality",
    )
    rl.add_argument(
        "--epsilon",
        type=float,
        default=0.0,
        help="mix the target with the uniform policy by ε in [0, 1]",
    )
    rl.add_argument(
        "--solver",
        choices=["fib", "qmdp"],
        default="fib",
        help="POMDP solver for the target's alpha vectors",
    )
    rl.add_argument(
        "--lam",
        type=_lam,
        default=None,
        metavar="LAMBDA|rule",
        help="IMM weight λ >= 0, or 'rule' for the paper's r = round(-0.0002·epochs + "
        "0.1891, 1), λ = r/(1-r) [default: rule]",
    )
    rl.add_argument(
        "--num-samples",
        type=_positive_int("--num-samples"),
        default=None,
        metavar="K",
        help="sample K extended contexts per state instead of enumerating all of them",
    )
    rl.add_argument(
        "--env", default="imm_ray/ToroidalGrid-v0", help="id of a registered MDP/POMDP pair"
    )
    rl.add_argument(
        "--grid-size", type=int, default=None, help="side of the toroidal grid (>= 2) [default: 11]"
    )
    rl.add_argument(
        "--output",
        type=Path,
        default=None,
        help="also write per-seed results to this CSV file (written atomically)",
    )
    rl.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join (e.g. 'auto' or 'ray://host:10001'); default: "
        "$RAY_ADDRESS, else an embedded local Ray",
    )
    rl.set_defaults(handler=_train_rl)

    sweep = commands.add_parser(
        "sweep",
        help="run a named experiment or a YAML/TOML sweep file on Ray Tune",
        description=(
            "Run a sweep on Ray Tune and write summary.csv, summary.md and figure.png "
            "under STORAGE/NAME. Named experiments: RL figure2, figure9, lambda-search; "
            "logistic regression figure1, figure4, figure6, figure8, figure10, table4, "
            "quality-search."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    sweep.add_argument("experiment", metavar="NAME|FILE", help="experiment name or sweep file")
    sweep.add_argument(
        "--seeds",
        type=_positive_int("--seeds"),
        default=None,
        help="number of seeds, or Monte Carlo runs for the logistic experiments "
        "(overrides the experiment's)",
    )
    sweep.add_argument(
        "--storage", type=Path, default=Path("results"), help="where results are stored"
    )
    sweep.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted sweep in STORAGE/NAME without rerunning finished trials",
    )
    sweep.add_argument(
        "--cpus-per-trial", type=float, default=None, help="CPUs reserved per trial [default: 1]"
    )
    sweep.add_argument(
        "--gpus-per-trial",
        type=float,
        default=None,
        help="GPUs per trial, fractions allowed; the learner runs on the GPU [default: 0]",
    )
    sweep.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join; default: $RAY_ADDRESS, else an embedded local Ray",
    )
    sweep.set_defaults(handler=_sweep)

    report = commands.add_parser(
        "report", help="redraw the CSV, markdown table and plot of a stored sweep"
    )
    report.add_argument("path", type=Path, metavar="PATH", help="a sweep folder: STORAGE/NAME")
    report.set_defaults(handler=_report)
    add_lm_commands(commands, UsageError)
    return parser


def _experiment(args: argparse.Namespace):
    from tuning.base import LOGISTIC_NAMES, RL_NAMES, named_experiment

    experiment = named_experiment(args.experiment)
    if experiment is None and Path(args.experiment).suffix in (".yaml", ".yml", ".toml"):
        from tuning.config_file import load_experiment

        experiment = load_experiment(args.experiment)
    if experiment is None:
        raise UsageError(
            f"experiment must be one of {', '.join(RL_NAMES + LOGISTIC_NAMES)} or a "
            f".yaml/.toml file, got {args.experiment!r}"
        )
    return experiment.with_overrides(
        seeds=args.seeds, cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial
    )


def _sweep(args: argparse.Namespace) -> int:
    from tuning.report import write_report
    from tuning.sweep import run_sweep

    try:
        experiment = _experiment(args)
        # Every trial's settings are validated (targets solved, envs checked) before Ray starts.
        experiment.validate()
        folder = run_sweep(experiment, args.storage, resume=args.resume, address=args.address)
    except ValueError as err:
        raise UsageError(str(err)) from None
    return _print_report(write_report(folder))


def _report(args: argparse.Namespace) -> int:
    from tuning.report import write_report

    try:
        return _print_report(write_report(args.path))
    except ValueError as err:
        raise UsageError(str(err)) from None


def _print_report(paths: dict[str, Path]) -> int:
    print(paths["table"].read_text())
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


def _train_rl(args: argparse.Namespace) -> int:
    from imm_ray.rl.imm_config import TargetSpec
    from imm_ray.rl.runs import IMM, NO_IMM, plan_runs
    from tuning.aggregate import format_table, summarize

    methods = [NO_IMM] if args.no_imm else [NO_IMM, IMM] if args.compare else [IMM]
    try:
        target = TargetSpec(
            kind=args.target,
            temperature=args.temperature,
            epsilon=args.epsilon,
            solver=args.solver,
        )
        runs = plan_runs(
            args.epochs,
            args.seeds,
            methods,
            args.lam,
            target=target,
            num_samples=args.num_samples,
            env=args.env,
            env_config={} if args.grid_size is None else {"size": args.grid_size},
        )
        # Build (and so validate) every distinct config before any Ray process starts.
        for run in {(r.method, r.lam): r for r in runs}.values():
            run.config().validate()
    except ValueError as err:
        raise UsageError(str(err)) from None

    results = _run_on_ray(runs, args.address)
    records = (
        (run.method, epoch, value)
        for run, result in zip(runs, results, strict=True)
        for epoch, value in result.items()
    )
    print(format_table(summarize(records)))
    if args.output is not None:
        _write_csv_atomically(args.output, runs, results)
        print(f"per-seed results: {args.output}")
    return 0


def _run_on_ray(runs, address: str | None) -> list[dict[int, float]]:
    import ray

    from imm_ray.rl.runs import train_and_evaluate

    if not ray.is_initialized():
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    task = ray.remote(num_cpus=1)(train_and_evaluate)
    pending = {task.remote(run): i for i, run in enumerate(runs)}
    results: list[dict[int, float] | None] = [None] * len(runs)
    start = time.monotonic()
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        results[pending.pop(done[0])] = ray.get(done[0])
        finished = len(runs) - len(pending)
        print(
            f"\r[{finished}/{len(runs)} runs, {time.monotonic() - start:.0f}s]",
            end="" if pending else "\n",
            file=sys.stderr,
            flush=True,
        )
    return results


def _write_csv_atomically(path: Path, runs, results) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", "seed", "lam", "epochs", "eval_return_mean"])
        for run, result in zip(runs, results, strict=True):
            for epoch, value in sorted(result.items()):
                writer.writerow([run.method, run.seed, f"{run.lam:.6g}", epoch, f"{value:.6f}"])
    os.replace(tmp, path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except UsageError as err:
        parser.exit(EXIT_USAGE, f"imm-ray: error: {err}\n")


if __name__ == "__main__":
    sys.exit(main())
