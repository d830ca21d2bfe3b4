"""``imm-ray sweep``, a named experiment or a sweep file on Ray Tune, and ``imm-ray report``,
which redraws a stored sweep's summary.

``sweep`` takes each experiment kind's options: the language-model and BERT ones are
refused, naming them, for an experiment of another kind.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from imm_ray.cli.base import UsageError, add_command, note, warn
from imm_ray.cli.options import (
    dests,
    finetune_options,
    lm_options,
    ray_options,
    resume_option,
    tracking_option,
    training_options,
)

STORAGE_HELP = (
    "where results are stored: a local folder, or a URI such as file:///abs/path, "
    "s3://bucket/prefix (credentials and endpoint from the AWS_* variables) or "
    "gs://bucket/prefix"
)

#: The groups of ``sweep``'s options that only some kinds of experiment take.
_SHARED = "language-model and BERT experiments (table1, table5, lm-lambda, causal-lm, table2)"
_LM = "LSTM language-model experiments (table1, table5, lm-lambda; causal-lm takes --preset)"
_BERT = "BERT experiments (table2)"


def add_sweep_and_report(commands) -> None:
    """Adds ``sweep`` and ``report`` to the ``imm-ray`` subparsers."""
    data = argparse.ArgumentParser(add_help=False)
    data.add_argument_group(_SHARED).add_argument(
        "--data",
        help="the data folder: PTB-format for the language models, the task's GLUE-layout "
        "TSV files for BERT",
    )
    sweep = add_command(
        commands,
        "sweep",
        _sweep,
        help="run a named experiment or a YAML/TOML sweep file on Ray Tune",
        parents=[
            ray_options(
                seeds_help="; for the logistic experiments a count of Monte Carlo runs "
                "(default: the experiment's)",
                per_trial_help=" (default: the experiment's, else all seeds in one trial)",
            ),
            data,
            training_options(_SHARED, epochs=None, precision=None),
            lm_options(_LM, preset=None),
            finetune_options(_BERT, dest_prefix="bert_"),
            resume_option("an interrupted sweep in STORAGE/NAME without rerunning finished trials"),
            tracking_option(
                "STORAGE/mlflow.db, a parent run per sweep with a run per trial; --resume "
                "goes on logging where the sweep was started"
            ),
        ],
        guard=False,
    )
    sweep.add_argument("experiment", metavar="NAME|FILE", help="experiment name or sweep file")
    sweep.add_argument("--storage", default="results", metavar="PATH|URI", help=STORAGE_HELP)
    sweep.add_argument("--cpus-per-trial", type=float, help="CPUs reserved per trial (default: 1)")
    sweep.add_argument(
        "--gpus-per-trial",
        type=float,
        help="GPUs per trial, fractions allowed; the learner runs on the GPU (default: 0)",
    )
    sweep.add_argument(
        "--verbose",
        action="store_true",
        help="show Tune's status tables instead of one line a trial",
    )
    sweep.add_argument(
        "--tensorboard",
        action="store_true",
        help="also write TensorBoard event files in each trial's folder (Tune's JSON and "
        "CSV results are always written)",
    )

    report = add_command(
        commands,
        "report",
        _report,
        help="redraw the CSV, markdown table and plot of a stored sweep",
        guard=False,
    )
    report.add_argument(
        "path", metavar="PATH|URI", help="a sweep folder: STORAGE/NAME (a local path or a URI)"
    )
    report.add_argument(
        "--format",
        choices=["csv", "json", "md"],
        help="print instead, and write nothing: every per-seed value (csv, json: one row per "
        "setting, size and seed, as imm_ray.results.load gives them) or the summary table "
        "(md) of a sweep",
    )


def _experiment(args: argparse.Namespace):
    from tuning.kinds import experiment_names, named_experiment

    # A sweep file is read without looking it up among the named experiments first: that
    # would import every experiment kind, PyTorch with them (≈ 1 s).
    if Path(args.experiment).suffix in (".yaml", ".yml", ".toml"):
        from tuning.config_file import load_experiment

        experiment = load_experiment(args.experiment)
    else:
        experiment = named_experiment(args.experiment)
    if experiment is None:
        raise UsageError(
            f"experiment must be one of {', '.join(experiment_names())} or a "
            f".yaml/.toml file, got {args.experiment!r}"
        )
    split = {}
    if args.seeds_per_trial is not None:
        if experiment.kind != "rl":
            raise UsageError(
                f"--seeds-per-trial applies to RL experiments only; {args.experiment} is a "
                f"{experiment.kind} experiment"
            )
        split = {"seeds_per_trial": args.seeds_per_trial}
    return experiment.with_overrides(
        **split,
        seeds=args.seeds,
        cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial,
        **_kind_overrides(args, experiment.kind),
    )


#: How ``sweep``'s refusals name the experiment kinds that take kind-specific options.
KIND_NAMES = {"lm": "LSTM language-model", "causal-lm": "causal-LM", "bert": "BERT"}


def _kind_overrides(args: argparse.Namespace, kind: str) -> dict:
    """The language-model or BERT options given to ``sweep``, as fields for
    ``with_overrides``; a :class:`UsageError` naming those that the experiment's kind does
    not take, and the kinds that do."""

    def given(fields: list[str], prefix: str = "") -> dict:
        values = {field: getattr(args, prefix + field) for field in fields}
        return {field: value for field, value in values.items() if value is not None}

    shared = given(["data", *dests(training_options(epochs=None, precision=None))])
    takes = {
        "lm": {**shared, **given(dests(lm_options(preset=None)))},
        "causal-lm": {**shared, **given(["preset"])},
        "bert": {**shared, **given(dests(finetune_options()), "bert_")},
    }
    taken = takes.get(kind, {})
    refused: dict[tuple[str, ...], list[str]] = {}
    for options in takes.values():
        for field in options:
            kinds = tuple(name for k, name in KIND_NAMES.items() if field in takes[k])
            if field not in taken and field not in refused.get(kinds, []):
                refused.setdefault(kinds, []).append(field)
    if refused:
        raise UsageError(
            "; ".join(
                f"{', '.join('--' + f.replace('_', '-') for f in fields)} apply to "
                f"{_listed(kinds)} experiments only"
                for kinds, fields in refused.items()
            )
        )
    return taken


def _listed(names: tuple[str, ...]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _sweep(args: argparse.Namespace) -> int:
    """Run a sweep on Ray Tune and write summary.csv, summary.md and figure.png under
    STORAGE/NAME. Named experiments: RL figure2, figure9, lambda-search, taxi; logistic
    regression figure1, figure4, figure6, figure8, figure10, table4, quality-search; LSTM
    language model table1, table5, lm-lambda (with --data); a causal transformer LM
    causal-lm (with --data; --preset tiny or small); BERT table2 (with --data, --model,
    --corpus). An option of an experiment's settings defaults to the experiment's."""
    from imm_ray.console import Interrupted
    from tuning.sweep import SweepInterrupted, run_sweep_and_report

    try:
        experiment = _experiment(args)
        # Every trial's settings are validated (targets solved, envs checked) before Ray starts.
        experiment.validate()
        for line in experiment.notes():
            note(line)
        report = run_sweep_and_report(
            experiment,
            args.storage,
            resume=args.resume,
            address=args.address,
            verbose=args.verbose,
            tensorboard=args.tensorboard,
            mlflow=args.mlflow,
        )
    except ValueError as err:
        raise UsageError(str(err)) from None
    except SweepInterrupted as stop:
        if stop.report is not None:
            _print_report(stop.report)
        raise Interrupted(stop.resumable) from None
    return _print_report(report)


def _report(args: argparse.Namespace) -> int:
    """Redraw a stored sweep's summary.csv, summary.md and figure.png from its trials'
    results, and print its table; for a stored search (imm-ray search), its trials.csv,
    best.json and PBT schedule. With --format, print a sweep's per-seed values (csv, json)
    or its summary table (md) instead, and write nothing."""
    from tuning.report import write_report
    from tuning.search import SEARCH_FILE, write_search_report
    from tuning.storage import resolve

    try:
        folder = resolve(args.path, option=None)
        searched = '"kind": "search"' in _read_or_empty(folder / SEARCH_FILE)
        if args.format is not None:
            if searched:
                raise UsageError(
                    f"--format reads a sweep's results; {args.path} holds a search, whose "
                    "table is its trials.csv"
                )
            return _print_data(folder, args.format)
        if searched:
            report = write_search_report(folder)  # a search's folder: its table again
            print(report.table)
            for kind, path in report.paths.items():
                print(f"{kind}: {path}")
            return 0
        return _print_report(write_report(folder))
    except ValueError as err:
        raise UsageError(str(err)) from None


def _print_data(folder, form: str) -> int:
    """Prints a stored sweep's per-seed values (csv, json) or its summary table (md)."""
    if form == "md":
        from tuning.report import summary_table

        print(summary_table(folder), end="")
        return 0
    from imm_ray.results import load

    frame = load(folder)
    if form == "csv":
        print(frame.to_csv(index=False), end="")
    else:
        print(frame.to_json(orient="records", indent=1))
    return 0


def _read_or_empty(location) -> str:
    try:
        return location.read_text()
    except (FileNotFoundError, NotADirectoryError):
        return ""


def _print_report(report) -> int:
    """Prints a :class:`~tuning.report.Report`: its table, where its files are, and what a
    partial sweep is missing (also on stderr, which a redirected stdout does not hide)."""
    print(report.table)
    for kind, path in report.paths.items():
        print(f"{kind}: {path}")
    if report.missing:
        first = report.missing[0].replace("**", "")
        warn(first[0].lower() + first[1:])
        for line in report.missing[1:]:
            print(f"  {line}", file=sys.stderr)
    return 0
