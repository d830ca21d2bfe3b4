"""``imm-ray train rl``: MDP policies trained with and/or without IMM from the POMDP policy,
and their evaluation table.

It plans the same trials as ``imm-ray sweep`` (one per setting, all its λ groups side by
side, or one per setting and chunk of seeds when ``--seeds-per-trial`` splits them, each
seed-vectorized on RLlib) and runs them as Ray tasks. Without ``--address`` (or
``RAY_ADDRESS``) it starts an embedded Ray sized to this machine; with one, it joins that
cluster, which is also what ``ray job submit -- imm-ray ...`` runs.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
from pathlib import Path

from imm_ray import tracking
from imm_ray._io import write_text_atomically
from imm_ray.cli import options
from imm_ray.cli.base import UsageError, add_command, note, warn

DEFAULT_ENV = "imm_ray/ToroidalGrid-v0"
#: The env ids ``--grid-size`` configures.
GRID_ENV_IDS = ("imm_ray/ToroidalGrid-v0", "imm_ray/ToroidalGridPOMDP-v0")
#: ``train rl``'s setting labels (its table's ``method`` column).
NO_IMM, IMM = "no-imm", "imm"


def add_train_rl(kinds) -> None:
    """Adds ``train rl`` to the ``train`` subparsers."""
    rl = add_command(
        kinds,
        "rl",
        _train_rl,
        help="REINFORCE on a pair's MDP (default: the toroidal grid), with IMM from the "
        "POMDP's FIB policy",
        parents=[
            options.ray_options(
                seeds_help=" (default: 10)", per_trial_help=" (default: all seeds in one task)"
            ),
            options.tracking_option(
                "mlflow.db in --output's folder, else in results/; a run per setting and "
                "seed under a parent run"
            ),
        ],
        guard=False,
    )
    rl.add_argument(
        "--epochs",
        type=options.positive_int("--epochs"),
        nargs="+",
        default=[50],
        help="dataset sizes: epochs of one trajectory each (50 steps on the grid; a Taxi "
        "episode, up to 200); each is evaluated",
    )
    methods = rl.add_mutually_exclusive_group()
    methods.add_argument("--no-imm", action="store_true", help="train without IMM only")
    methods.add_argument(
        "--compare", action="store_true", help="train both with and without IMM, side by side"
    )
    rl.add_argument(
        "--target",
        choices=["argmax", "softmax"],
        help="restricted policy P̂(a|x): best action at the uniform belief, or softmax(U/T) "
        "(default: argmax)",
    )
    rl.add_argument(
        "--temperature",
        type=float,
        help="softmax temperature T > 0 (with --target softmax); larger is lower quality "
        "(default: 1.0)",
    )
    rl.add_argument(
        "--epsilon",
        type=float,
        help="mix the target with the uniform policy by ε in [0, 1] (default: 0)",
    )
    rl.add_argument(
        "--solver",
        choices=["fib", "qmdp"],
        help="POMDP solver for the target's alpha vectors (default: fib)",
    )
    rl.add_argument(
        "--lam",
        type=options.lam,
        metavar="LAMBDA|rule",
        help="IMM weight λ >= 0, or 'rule' for the paper's r = round(-0.0002·epochs + "
        "0.1891, 1) clipped to [0, 0.9], λ = r/(1-r) (default: rule)",
    )
    rl.add_argument(
        "--num-samples",
        type=options.positive_int("--num-samples"),
        metavar="K",
        help="sample K extended contexts per step instead of enumerating all of them "
        "(default: enumerate)",
    )
    rl.add_argument(
        "--env",
        default=DEFAULT_ENV,
        help="id of a registered pair's MDP: imm_ray/ToroidalGrid-v0 or imm_ray/Taxi-v0",
    )
    rl.add_argument("--grid-size", type=int, help="side of the toroidal grid, >= 2 (default: 11)")
    rl.add_argument(
        "--output",
        type=options.new_file("--output"),
        help="also write per-seed results to this CSV file: a new one (written atomically)",
    )


def _rl_experiment(args: argparse.Namespace):
    """The sweep experiment ``train rl`` runs: its settings, sizes and seeds."""
    from imm_ray.restricted.target import TargetSpec
    from tuning.rl import Experiment, Setting

    target_given = [
        option
        for option, value in (
            ("--target", args.target),
            ("--temperature", args.temperature),
            ("--epsilon", args.epsilon),
            ("--solver", args.solver),
            ("--lam", args.lam),
            ("--num-samples", args.num_samples),
        )
        if value is not None
    ]
    if args.grid_size is not None and args.env not in GRID_ENV_IDS:
        raise UsageError(
            f"--grid-size applies only to --env {' or '.join(GRID_ENV_IDS)}, got --env {args.env}"
        )
    if args.no_imm and target_given:
        warn(f"{', '.join(target_given)} has no effect with --no-imm")
    if args.temperature is not None and (args.target or "argmax") == "argmax":
        warn("--temperature has no effect with --target argmax (use --target softmax)")
    target = TargetSpec(
        kind=args.target or "argmax",
        temperature=1.0 if args.temperature is None else args.temperature,
        epsilon=0.0 if args.epsilon is None else args.epsilon,
        solver=args.solver or "fib",
    )
    settings = []
    if args.no_imm or args.compare:
        settings.append(Setting(NO_IMM, imm=False))
    if not args.no_imm:
        settings.append(Setting(IMM, lam=args.lam, target=target, num_samples=args.num_samples))
    return Experiment(
        name="train-rl",
        settings=tuple(settings),
        epochs=tuple(args.epochs),
        seeds=tuple(args.seeds or range(10)),
        seeds_per_trial=args.seeds_per_trial,
        env=args.env,
        env_config={} if args.grid_size is None else {"size": args.grid_size},
    )


def _train_rl(args: argparse.Namespace) -> int:
    """Train MDP policies with REINFORCE on RLlib, with IMM from the POMDP policy (paper
    Sec. 7.3, App. D.3), and print mean evaluation rewards over seeds with 10th/90th
    percentiles. Seeds (and a setting's λ groups) train side by side (seed-vectorized), one
    Ray task per setting, or per setting and chunk of seeds with --seeds-per-trial, as in
    `imm-ray sweep`. With --mlflow, each setting and seed is an MLflow run."""
    try:
        experiment = _rl_experiment(args)
        trials = experiment.trials()
        # Checks every setting's env, env config and target before any Ray process starts.
        experiment.validate()
        inputs = experiment.load_inputs()
        if args.output is not None:
            _check_writable(args.output)
    except ValueError as err:
        raise UsageError(str(err)) from None
    for line in experiment.notes():
        note(line)

    store, parent = _tracking(args, experiment)
    with tracking.running(parent):
        return _train_and_report(args, trials, inputs, store, parent)


def _tracking(args: argparse.Namespace, experiment) -> tuple:
    """With ``--mlflow``: its store, opened before Ray starts (one that cannot be opened is
    a usage error), and this command's parent run; else ``(None, None)``."""
    if args.mlflow is None:
        return None, None
    folder = args.output.parent if args.output is not None else Path("results")
    try:
        store = tracking.open_store(args.mlflow, folder, experiment.name)
    except ValueError as err:
        raise UsageError(str(err)) from None
    return store, store.start_run("train rl", tracking.trial_params(experiment.to_dict()))


def _train_and_report(args: argparse.Namespace, trials: list[dict], inputs: dict, store, parent):
    """Runs the trials, prints their table (and writes ``--output``); with ``--mlflow``,
    logs a run per setting and seed under ``parent``."""
    from tuning.aggregate import format_table, summarize

    try:
        results = _run_trials_on_ray(trials, args.address, inputs)
    except ValueError as err:  # a cluster that cannot be joined
        raise UsageError(str(err)) from None
    lam = {
        (trial["setting"], epochs): group["lam"]
        for trial in trials
        for group in trial["groups"]
        for epochs in group["epochs"]
    }
    rows = [
        (trial["setting"], lam[trial["setting"], epochs], seed, epochs, value)
        for trial, result in zip(trials, results, strict=True)
        for epochs, values in result.items()
        for seed, value in values.items()
    ]
    for setting, _, seed, epochs, value in rows:
        if not math.isfinite(value):
            warn(f"seed {seed} ({setting}, {epochs} epochs) failed: its loss became non-finite")
    table = format_table(summarize((row[0], row[3], row[4]) for row in rows))
    print(table)
    if args.output is not None:
        _write_csv_atomically(args.output, sorted(rows, key=lambda r: (r[0], r[2], r[3])))
        print(f"per-seed results: {args.output}")
    if parent is not None:
        _log_seed_runs(store, parent, trials, results, lam)
        parent.log_text(table + "\n", "table.txt")
        if args.output is not None:
            parent.log_artifact(args.output)
        print(f"mlflow: {store.uri}")
    return 0


def _log_seed_runs(store, parent, trials: list[dict], results: list[dict], lam: dict) -> None:
    """A run per setting and seed under ``parent``: the trial's fields and the seed as
    parameters, ``eval_return_mean`` and ``lam`` at step = epochs; ``FAILED`` where the
    seed's loss became non-finite."""
    for trial, result in zip(trials, results, strict=True):
        fields = {key: value for key, value in trial.items() if key != "seeds"}
        by_seed: dict[int, dict[int, float]] = {}
        for epochs, values in result.items():
            for seed, value in values.items():
                by_seed.setdefault(seed, {})[epochs] = value
        for seed, returns in sorted(by_seed.items()):
            run = store.start_run(
                f"{trial['setting']} seed{seed}",
                {**fields, "seed": seed},
                {tracking.PARENT_TAG: parent.run_id},
            )
            for epochs, value in sorted(returns.items()):
                metrics = {"eval_return_mean": value, "lam": lam[trial["setting"], epochs]}
                run.log_metrics(metrics, step=epochs)
            run.end("FINISHED" if all(map(math.isfinite, returns.values())) else "FAILED")


def _run_trials_on_ray(trials: list[dict], address: str | None, inputs: dict) -> list[dict]:
    """Runs every trial as a Ray task, with the solved targets (``inputs``) from Ray's
    object store; shows progress with an ETA on stderr."""
    import ray

    from imm_ray.cluster import init_ray, shutdown_ray
    from tuning.rl import run_trial

    started = init_ray(address, log_to_driver=False)
    try:
        return _wait_for_trials(ray.remote(num_cpus=1)(run_trial), trials, ray.put(inputs))
    finally:
        if started:
            shutdown_ray()


def _wait_for_trials(task, trials: list[dict], *args) -> list[dict]:
    import ray

    from imm_ray.progress import Progress

    pending = {task.remote(trial, *args): i for i, trial in enumerate(trials)}
    cost = [len(t["seeds"]) * len(t["groups"]) * max(t["epochs"]) for t in trials]
    results: list[dict | None] = [None] * len(trials)
    # Each finished trial is a line where stderr is not a terminal; the ETA follows cost.
    with Progress(every=0.0) as progress:
        progress.start(len(trials), unit="trials")
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            index = pending.pop(done[0])
            results[index] = ray.get(done[0])
            finished = sum(c for c, r in zip(cost, results, strict=True) if r is not None)
            progress.update(len(trials) - len(pending), work=(finished, sum(cost)))
        progress.finish()
    return results


def _check_writable(path: Path) -> None:
    """``--output`` (a new file, :func:`~imm_ray.cli.options.new_file`) must be in a
    folder that exists or can be made, writable."""
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise UsageError(f"--output: cannot write under {str(folder)!r}")


def _write_csv_atomically(path: Path, rows: list[tuple]) -> None:
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow(["method", "seed", "lam", "epochs", "eval_return_mean"])
    for setting, lam, seed, epochs, value in rows:
        writer.writerow([setting, seed, f"{lam:.6g}", epochs, f"{value:.6f}"])
    write_text_atomically(path, out.getvalue())
