"""The ``imm-ray`` command.

``imm-ray train rl`` trains MDP policies with and/or without IMM from the POMDP policy and
prints the evaluation table. It plans the same trials as ``imm-ray sweep`` (one per
setting, all its λ groups side by side, or one per setting and chunk of seeds when
``--seeds-per-trial`` splits them, each seed-vectorized on RLlib) and runs them as Ray
tasks.
Without ``--address`` (or ``RAY_ADDRESS``) it starts an embedded Ray sized to this
machine; with one, it joins that cluster, which is also what ``ray job submit -- imm-ray
...`` runs.

Every option is checked before Ray starts: a bad value exits with status 2 and a one-line
message naming the option, never a traceback. So does a cluster that cannot be reached, or
that has no node able to run a trial (checked once Ray is up, before any trial starts).

SIGINT (Ctrl+C) ends every command with one line and exit status 130: the exact command
that resumes it where there is state to resume (``sweep``, ``train lm``), else that it was
interrupted.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import re
import shlex
import sys
import time
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import NoReturn

from imm_ray import _compat
from imm_ray._io import write_text_atomically
from imm_ray.bert_cli import (
    add_bert_commands,
    add_make_acceptability,
    add_sweep_bert_options,
    bert_sweep_overrides,
)
from imm_ray.lm_cli import add_lm_commands
from imm_ray.lm_train_cli import add_sweep_lm_options, add_train_lm, lm_sweep_overrides

EXIT_USAGE = 2
#: A command stopped by SIGINT exits as a shell reports one killed by it (128 + 2).
EXIT_INTERRUPTED = 130
DEFAULT_ENV = "imm_ray/ToroidalGrid-v0"
#: The env ids ``--grid-size`` configures.
GRID_ENV_IDS = ("imm_ray/ToroidalGrid-v0", "imm_ray/ToroidalGridPOMDP-v0")
#: ``train rl``'s setting labels (its table's ``method`` column).
NO_IMM, IMM = "no-imm", "imm"


class UsageError(ValueError):
    """A bad command-line value; reported as ``imm-ray: error: ...`` with exit status 2."""


SEEDS_HELP = (
    "seeds: a count N (seeds 0 … N-1), a range 'A-B' or a list '1,4,7'; statistics are across seeds"
)


def _seeds(text: str) -> list[int]:
    """``"10"`` (a count: seeds 0 … 9), ``"3-7"`` or ``"1,4,7"`` → a list of seeds >= 0.

    ``train`` and ``sweep`` read ``--seeds`` alike; a single seed s is ``"s-s"``.
    """
    try:
        if text.strip().isdigit():
            count = int(text)
            if count < 1:
                raise ValueError
            return list(range(count))
        seeds: list[int] = []
        for part in text.split(","):
            lo, sep, hi = part.strip().partition("-")
            first, last = int(lo), int(hi) if sep else int(lo)
            if first < 0 or last < first:
                raise ValueError
            seeds.extend(range(first, last + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--seeds must be a count N >= 1, a range like '0-9' or a list like '1,4,7' "
            f"of seeds >= 0, got {text!r}"
        ) from None
    twice = sorted({seed for seed in seeds if seeds.count(seed) > 1})
    if twice:  # as a sweep file's seeds, each seed is named once
        raise argparse.ArgumentTypeError(
            f"--seeds must name each seed once, got {text!r} (seed"
            f"{'s' if len(twice) > 1 else ''} {', '.join(map(str, twice))} more than once)"
        )
    return sorted(seeds)


class _HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to an option's help once, unless the help already says it
    or there is no default to show."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        default = action.default
        if (
            "default:" in help_text
            or default is None
            or default is False
            or default is argparse.SUPPRESS
            or not action.option_strings
        ):
            return help_text
        shown = " ".join(map(str, default)) if isinstance(default, list) else "%(default)s"
        return f"{help_text} (default: {shown})"


def _package_version() -> str:
    try:
        return version("imm-ray")
    except PackageNotFoundError:
        return "unknown"


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


#: argparse's prefix of an error about one argument: ``argument --lam: ...``.
_ARGUMENT_PREFIX = re.compile(r"^argument (\S+): ")
_REQUIRED = "the following arguments are required: "


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose own errors (a bad or missing value, an unknown choice or
    option, a missing argument) take the form of every other bad input: one line
    ``imm-ray: error: <field> ...`` and exit status 2, without argparse's usage text.

    Subparsers are made with the class of their parent (``add_subparsers``' default
    ``parser_class``), so every ``imm-ray`` command is one of these.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # The deepest command chosen sets it last: unknown arguments, which the top-level
        # parser reports, name the command they were given to.
        self.set_defaults(_command_prog=self.prog)

    def parse_args(self, args=None, namespace=None) -> argparse.Namespace:
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            command = getattr(parsed, "_command_prog", self.prog)
            self.error(
                f"unrecognized arguments: {' '.join(extras)} ('{command} --help' lists its options)"
            )
        return parsed

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"imm-ray: error: {_one_form(message)}\n")


def _one_form(message: str) -> str:
    """argparse's ``argument --lam: --lam must be ...`` as ``--lam must be ...``, its
    ``argument --k: invalid int value: 'x'`` as ``--k: invalid int value: 'x'`` and
    ``the following arguments are required: --data`` as ``--data is required``."""
    match = _ARGUMENT_PREFIX.match(message)
    if match:
        name, rest = match.group(1), message[match.end() :]
        return rest if rest.startswith(name) else f"{name}: {rest}"
    if message.startswith(_REQUIRED):
        names = message[len(_REQUIRED) :].split(", ")
        return f"{', '.join(names)} {'is' if len(names) == 1 else 'are'} required"
    return message


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="imm-ray",
        description="Induced Model Matching on Ray: restricted models help train full models.",
    )
    parser.add_argument("--version", action="version", version=f"imm-ray {_package_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train = commands.add_parser("train", help="train models")
    kinds = train.add_subparsers(dest="kind", required=True, metavar="KIND")
    rl = kinds.add_parser(
        "rl",
        help="REINFORCE on a pair's MDP (default: the toroidal grid), with IMM from the "
        "POMDP's FIB policy",
        description=(
            "Train MDP policies with REINFORCE on RLlib, with IMM from the POMDP policy "
            "(paper Sec. 7.3, App. D.3), and print mean evaluation rewards over seeds "
            "with 10th/90th percentiles. Seeds (and a setting's λ groups) train side by "
            "side (seed-vectorized), one Ray task per setting, or per setting and chunk of "
            "seeds with --seeds-per-trial, as in `imm-ray sweep`."
        ),
        formatter_class=_HelpFormatter,
    )
    rl.add_argument(
        "--epochs",
        type=_positive_int("--epochs"),
        nargs="+",
        default=[50],
        help="dataset sizes: epochs of one trajectory each (50 steps on the grid; a Taxi "
        "episode, up to 200); each is evaluated",
    )
    rl.add_argument("--seeds", type=_seeds, default=None, help=f"{SEEDS_HELP} (default: 10)")
    methods = rl.add_mutually_exclusive_group()
    methods.add_argument("--no-imm", action="store_true", help="train without IMM only")
    methods.add_argument(
        "--compare", action="store_true", help="train both with and without IMM, side by side"
    )
    rl.add_argument(
        "--target",
        choices=["argmax", "softmax"],
        default=None,
        help="restricted policy P̂(a|x): best action at the uniform belief, or softmax(U/T) "
        "(default: argmax)",
    )
    rl.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="softmax temperature T > 0 (with --target softmax); larger is lower quality "
        "(default: 1.0)",
    )
    rl.add_argument(
        "--epsilon",
        type=float,
        default=None,
        help="mix the target with the uniform policy by ε in [0, 1] (default: 0)",
    )
    rl.add_argument(
        "--solver",
        choices=["fib", "qmdp"],
        default=None,
        help="POMDP solver for the target's alpha vectors (default: fib)",
    )
    rl.add_argument(
        "--lam",
        type=_lam,
        default=None,
        metavar="LAMBDA|rule",
        help="IMM weight λ >= 0, or 'rule' for the paper's r = round(-0.0002·epochs + "
        "0.1891, 1) clipped to [0, 0.9], λ = r/(1-r) (default: rule)",
    )
    rl.add_argument(
        "--num-samples",
        type=_positive_int("--num-samples"),
        default=None,
        metavar="K",
        help="sample K extended contexts per step instead of enumerating all of them "
        "(default: enumerate)",
    )
    rl.add_argument(
        "--seeds-per-trial",
        type=_positive_int("--seeds-per-trial"),
        default=None,
        metavar="N",
        help="split each setting's seeds into Ray tasks of N seeds, which Ray can spread "
        "over a cluster's nodes; a seed's results do not depend on N (default: all seeds "
        "in one task)",
    )
    rl.add_argument(
        "--env",
        default=DEFAULT_ENV,
        help="id of a registered pair's MDP: imm_ray/ToroidalGrid-v0 or imm_ray/Taxi-v0",
    )
    rl.add_argument(
        "--grid-size", type=int, default=None, help="side of the toroidal grid, >= 2 (default: 11)"
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
        help="Ray cluster to join: HOST:PORT of its GCS, ray://HOST:PORT, or 'auto' (the one "
        "`ray start` recorded on this machine); default: $RAY_ADDRESS, else an embedded "
        "Ray of its own",
    )
    rl.set_defaults(handler=_train_rl)
    add_train_lm(kinds, UsageError)
    add_bert_commands(kinds, UsageError)

    sweep = commands.add_parser(
        "sweep",
        help="run a named experiment or a YAML/TOML sweep file on Ray Tune",
        description=(
            "Run a sweep on Ray Tune and write summary.csv, summary.md and figure.png "
            "under STORAGE/NAME. Named experiments: RL figure2, figure9, lambda-search, taxi; "
            "logistic regression figure1, figure4, figure6, figure8, figure10, table4, "
            "quality-search; LSTM language model table1, table5, lm-lambda (with --data); BERT "
            "table2 (with --data, --model, --corpus)."
        ),
        formatter_class=_HelpFormatter,
    )
    sweep.add_argument("experiment", metavar="NAME|FILE", help="experiment name or sweep file")
    sweep.add_argument(
        "--seeds",
        type=_seeds,
        default=None,
        help=f"{SEEDS_HELP}; for the logistic experiments a count of Monte Carlo runs "
        "(default: the experiment's)",
    )
    sweep.add_argument(
        "--seeds-per-trial",
        type=_positive_int("--seeds-per-trial"),
        default=None,
        metavar="N",
        help="RL experiments: split each setting's seeds into trials of N seeds, which Ray "
        "can spread over a cluster's nodes; a seed's results do not depend on N (default: "
        "the experiment's, else all seeds in one trial)",
    )
    sweep.add_argument(
        "--storage",
        default="results",
        metavar="PATH|URI",
        help="where results are stored: a local folder, or a URI such as file:///abs/path, "
        "s3://bucket/prefix (credentials and endpoint from the AWS_* variables) or "
        "gs://bucket/prefix",
    )
    sweep.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted sweep in STORAGE/NAME without rerunning finished trials",
    )
    sweep.add_argument(
        "--cpus-per-trial", type=float, default=None, help="CPUs reserved per trial (default: 1)"
    )
    sweep.add_argument(
        "--gpus-per-trial",
        type=float,
        default=None,
        help="GPUs per trial, fractions allowed; the learner runs on the GPU (default: 0)",
    )
    sweep.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join: HOST:PORT of its GCS, ray://HOST:PORT, or 'auto' (the one "
        "`ray start` recorded on this machine); default: $RAY_ADDRESS, else an embedded "
        "Ray of its own",
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
    add_sweep_lm_options(sweep)
    add_sweep_bert_options(sweep)
    sweep.set_defaults(handler=_sweep)

    report = commands.add_parser(
        "report", help="redraw the CSV, markdown table and plot of a stored sweep"
    )
    report.add_argument(
        "path", metavar="PATH|URI", help="a sweep folder: STORAGE/NAME (a local path or a URI)"
    )
    report.set_defaults(handler=_report)
    add_make_acceptability(add_lm_commands(commands, UsageError), UsageError)
    return parser


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
        **lm_sweep_overrides(args, experiment),
        **bert_sweep_overrides(args, experiment),
    )


def _sweep(args: argparse.Namespace) -> int:
    from imm_ray.console import Interrupted
    from tuning.sweep import SweepInterrupted, run_sweep_and_report

    try:
        experiment = _experiment(args)
        # Every trial's settings are validated (targets solved, envs checked) before Ray starts.
        experiment.validate()
        for note in experiment.notes():
            print(f"imm-ray: note: {note}", file=sys.stderr)
        report = run_sweep_and_report(
            experiment,
            args.storage,
            resume=args.resume,
            address=args.address,
            verbose=args.verbose,
            tensorboard=args.tensorboard,
        )
    except ValueError as err:
        raise UsageError(str(err)) from None
    except SweepInterrupted as stop:
        if stop.report is not None:
            _print_report(stop.report)
        raise Interrupted(stop.resumable) from None
    return _print_report(report)


def _report(args: argparse.Namespace) -> int:
    from tuning.report import write_report

    try:
        return _print_report(write_report(args.path))
    except ValueError as err:
        raise UsageError(str(err)) from None


def _print_report(report) -> int:
    """Prints a :class:`~tuning.report.Report`: its table, where its files are, and what a
    partial sweep is missing (also on stderr, which a redirected stdout does not hide)."""
    print(report.table)
    for kind, path in report.paths.items():
        print(f"{kind}: {path}")
    if report.missing:
        first = report.missing[0].replace("**", "")
        _warn(first[0].lower() + first[1:])
        for line in report.missing[1:]:
            print(f"  {line}", file=sys.stderr)
    return 0


def _warn(message: str) -> None:
    print(f"imm-ray: warning: {message}", file=sys.stderr)


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
        _warn(f"{', '.join(target_given)} has no effect with --no-imm")
    if args.temperature is not None and (args.target or "argmax") == "argmax":
        _warn("--temperature has no effect with --target argmax (use --target softmax)")
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
    from tuning.aggregate import format_table, summarize

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
    for note in experiment.notes():
        print(f"imm-ray: note: {note}", file=sys.stderr)

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
            _warn(f"seed {seed} ({setting}, {epochs} epochs) failed: its loss became non-finite")
    print(format_table(summarize((row[0], row[3], row[4]) for row in rows)))
    if args.output is not None:
        _write_csv_atomically(args.output, sorted(rows, key=lambda r: (r[0], r[2], r[3])))
        print(f"per-seed results: {args.output}")
    return 0


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

    pending = {task.remote(trial, *args): i for i, trial in enumerate(trials)}
    cost = [len(t["seeds"]) * len(t["groups"]) * max(t["epochs"]) for t in trials]
    results: list[dict | None] = [None] * len(trials)
    start = time.monotonic()
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            index = pending.pop(done[0])
            results[index] = ray.get(done[0])
            elapsed = time.monotonic() - start
            finished = sum(c for c, r in zip(cost, results, strict=True) if r is not None)
            eta = elapsed * (sum(cost) - finished) / finished
            print(
                f"\r[{len(trials) - len(pending)}/{len(trials)} trials, {elapsed:.0f}s"
                + (f", ETA {eta:.0f}s]" if pending else "]"),
                end="" if pending else "\n",
                file=sys.stderr,
                flush=True,
            )
    except KeyboardInterrupt:
        if len(pending) < len(trials):
            print(file=sys.stderr)  # ends the progress line
        raise
    return results


def _check_writable(path: Path) -> None:
    """``--output`` must be a file path whose folder exists or can be made, writable."""
    if path.is_dir():
        raise UsageError(f"--output must be a file path, got the folder {str(path)!r}")
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


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    from imm_ray.cluster import prefer_loopback
    from imm_ray.console import quiet_library_logs

    prefer_loopback(getattr(args, "address", None))  # before anything imports Ray
    quiet_library_logs()
    try:
        return args.handler(args)
    except UsageError as err:
        parser.exit(EXIT_USAGE, f"imm-ray: error: {err}\n")
    except KeyboardInterrupt as interrupt:
        print(f"imm-ray: {_interrupted(argv, interrupt)}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED


def _interrupted(argv: list[str], interrupt: KeyboardInterrupt) -> str:
    """What a command stopped by SIGINT says last: the exact command that resumes it, or
    restarts it where nothing was kept (:class:`~imm_ray.console.Interrupted`), else only
    that it was interrupted (a command that keeps no state, such as ``train rl``)."""
    resumable = getattr(interrupt, "resumable", None)
    if resumable is None:
        return "interrupted"
    if not resumable:
        return f"interrupted before anything was saved; start again with: {_command(argv)}"
    resume = argv if "--resume" in argv else [*argv, "--resume"]
    return f"interrupted; resume with: {_command(resume)}"


def _command(argv: list[str]) -> str:
    return shlex.join(["imm-ray", *argv])


def run() -> None:
    """The ``imm-ray`` program: :func:`main`, then a fast exit.

    Once a command has finished (its files written and closed, Ray shut down), Python's own
    teardown of the modules a sweep loads (Ray, Tune, pandas, matplotlib) still takes
    0.5–1 s; the program flushes its output and logs and leaves without it, only with the
    Ray and Python this was tested on (:func:`imm_ray._compat.fast_exit`). Where Ray is
    still up (a command that left it running), or on any other version, it exits the usual
    way (``sys.exit``), so that every exit hook runs.
    """
    code = main()
    ray = sys.modules.get("ray")
    if (ray is not None and ray.is_initialized()) or not _compat.fast_exit():
        sys.exit(code)
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(code or 0))


if __name__ == "__main__":
    run()
