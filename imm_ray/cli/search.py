"""``imm-ray search``: a Tune search over IMM's weight, a named search or a sweep file with a
``search:`` section (:mod:`tuning.search`)."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from imm_ray.cli.base import UsageError, add_command
from imm_ray.cli.options import dests, lm_options, positive_int, ray_options, resume_option
from imm_ray.cli.sweep import STORAGE_HELP

#: What the CLI can set on a search's space (option field → SearchSpace field).
SPACE_OPTIONS = {
    "param": "param",
    "low": "low",
    "high": "high",
    "log": "log",
    "metric": "metric",
    "mode": "mode",
    "search": "algorithm",
    "scheduler": "scheduler",
    "num_samples": "num_samples",
    "max_concurrent": "max_concurrent",
    "seed": "seed",
}


def add_search(commands) -> None:
    """Adds ``search`` to the ``imm-ray`` subparsers."""
    search = add_command(
        commands,
        "search",
        _search,
        help="search λ (or r = λ/(1+λ)) with Tune: Optuna or random, ASHA, PBT schedules",
        parents=[
            ray_options(seeds_help=" (default: the search's)", per_trial_help=None),
            resume_option("an interrupted search in STORAGE/NAME without rerunning its trials"),
            lm_options("language-model searches (lm-lambda-asha)", preset=None),
        ],
        guard=False,
    )
    search.add_argument(
        "experiment",
        metavar="NAME|FILE",
        help="rl-lambda, rl-lambda-pbt, lm-lambda-asha, logistic-lambda, or a sweep file with "
        "a search: section",
    )
    found = search.add_argument_group("what is searched (default: the search's)")
    found.add_argument("--param", choices=["lambda", "r"], help="vary λ, or r = λ/(1+λ)")
    found.add_argument("--low", type=float, help="the range's low end")
    found.add_argument("--high", type=float, help="the range's high end")
    found.add_argument(
        "--log", action=argparse.BooleanOptionalAction, help="sample the range log-uniformly"
    )
    found.add_argument("--metric", help="the metric optimized (reward, valid_ppl, accuracy)")
    found.add_argument("--mode", choices=["min", "max"], help="minimize or maximize it")
    how = search.add_argument_group("how (default: the search's)")
    how.add_argument(
        "--search",
        choices=["random", "optuna"],
        help="the search algorithm, seeded: uniform draws, or Optuna's TPE",
    )
    how.add_argument(
        "--scheduler",
        choices=["fifo", "asha", "pbt"],
        help="run every trial to the end, stop the worse early (ASHA), or train a "
        "population whose λ changes mid-training (PBT)",
    )
    how.add_argument(
        "--num-samples",
        type=positive_int("--num-samples"),
        metavar="N",
        help="trials (PBT: the population)",
    )
    how.add_argument(
        "--max-concurrent",
        type=positive_int("--max-concurrent"),
        metavar="N",
        help="trials at once, and the batch Optuna and ASHA see results in (the results "
        "depend on it, not on the cluster)",
    )
    how.add_argument("--seed", type=int, help="seeds the search algorithm and PBT's choices")
    how.add_argument(
        "--epochs",
        type=positive_int("--epochs"),
        metavar="E",
        help="train each trial E epochs, evaluated at the search's interval",
    )
    search.add_argument(
        "--data", help="the PTB-format data folder of a language-model search (lm-lambda-asha)"
    )

    search.add_argument("--storage", default="results", metavar="PATH|URI", help=STORAGE_HELP)
    search.add_argument("--cpus-per-trial", type=float, help="CPUs reserved per trial (default: 1)")
    search.add_argument(
        "--gpus-per-trial", type=float, help="GPUs per trial, fractions allowed (default: 0)"
    )
    search.add_argument(
        "--verbose",
        action="store_true",
        help="show Tune's status tables instead of one line a trial",
    )


def _named_or_file(args: argparse.Namespace):
    from pathlib import Path

    from tuning.searches import SEARCHES, named_search

    if Path(args.experiment).suffix in (".yaml", ".yml", ".toml"):
        from tuning.config_file import load_search_file

        return load_search_file(args.experiment)
    search = named_search(args.experiment)
    if search is None:
        raise UsageError(
            f"search must be one of {', '.join(SEARCHES)} or a .yaml/.toml file with a "
            f"search: section, got {args.experiment!r}"
        )
    return search


def build_search(args: argparse.Namespace):
    """The search the command line asks for, checked (a ``ValueError`` naming the field)."""
    search = _named_or_file(args)
    experiment = search.experiment
    lm = {
        field: getattr(args, field)
        for field in ["data", *dests(lm_options(preset=None))]
        if getattr(args, field) is not None
    }
    if lm and experiment.kind != "lm":
        flags = ", ".join("--" + field.replace("_", "-") for field in lm)
        raise UsageError(
            f"{flags}: only for language-model searches (lm-lambda-asha), not {args.experiment}"
        )
    if lm:
        experiment = experiment.with_overrides(**lm)
    experiment = experiment.with_overrides(
        seeds=args.seeds, cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial
    )
    search = dataclasses.replace(search, experiment=experiment).with_budget(args.epochs)
    space = {field: getattr(args, option) for option, field in SPACE_OPTIONS.items()}
    search = search.with_space(**space)
    for part in search.split():
        part.validate()
    return search


def _search(args: argparse.Namespace) -> int:
    """Search IMM's weight with Ray Tune and print every trial's metric and the best
    setting; store them under STORAGE/NAME (trials.csv, best.json and, for population-based
    training, the best member's λ schedule: schedule.csv and schedule.png). The same
    --seed and --max-concurrent give the same trials and results; an interrupted search
    continues with --resume."""
    from imm_ray.console import Interrupted
    from tuning.search import run_searches
    from tuning.sweep import SweepInterrupted

    try:
        search = build_search(args)
        reports = run_searches(
            search, args.storage, resume=args.resume, address=args.address, verbose=args.verbose
        )
    except ValueError as err:
        raise UsageError(str(err)) from None
    except SweepInterrupted as stop:
        raise Interrupted(stop.resumable) from None
    parts = search.split()
    for part, report in zip(parts, reports, strict=True):
        if len(parts) > 1:
            print(f"\n{part.name}:")
        print(report.table)
        for kind, path in report.paths.items():
            print(f"{kind}: {path}")
    sys.stdout.flush()
    return 0
