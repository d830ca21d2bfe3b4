"""The options several ``imm-ray`` commands take, each defined once: argparse's type checks
of a value, and parent parsers (argparse's ``parents=``) that a command is built from.

A parent is made by a function, since argparse copies a parent's options into each command
given it: where commands state an option's default differently (``train lm``: the preset's,
``sweep``: the experiment's), the function takes what to say.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from imm_ray import checks, tracking

T = TypeVar("T")

SEEDS_HELP = (
    "seeds: a count N (seeds 0 … N-1), a range 'A-B' or a list '1,4,7'; statistics are across seeds"
)


def argument_type(parse: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse type from a parser that refuses with :mod:`imm_ray.checks`: argparse
    shows an :class:`argparse.ArgumentTypeError`'s own words (any other error becomes its
    "invalid value")."""

    @functools.wraps(parse)
    def typed(text: str) -> T:
        try:
            return parse(text)
        except checks.ConfigError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return typed


def _parsed(kind: Callable[[str], T], text: str) -> T | None:
    try:
        return kind(text)
    except ValueError:
        return None


def int_at_least(name: str, low: int, why: str = ""):
    """The type of an option ``name`` that takes an integer >= ``low``; ``why`` follows
    the bound in its error."""

    @argument_type
    def parse(text: str) -> int:
        value = _parsed(int, text)
        if value is None or value < low:
            checks.fail(name, text, f"an integer >= {low}{why}")
        return value

    return parse


def positive_int(name: str):
    """The type of an option ``name`` that takes an integer >= 1."""
    return int_at_least(name, 1)


@argument_type
def lam(text: str) -> float | None:
    """``--lam``: ``rule`` (None) or a finite λ >= 0."""
    if text == "rule":
        return None
    value = _parsed(float, text)
    if not checks.is_number(value) or value < 0:
        checks.fail("--lam", text, "'rule' or a finite number >= 0")
    return value


@argument_type
def seeds(text: str) -> list[int]:
    """``"10"`` (a count: seeds 0 … 9), ``"3-7"`` or ``"1,4,7"`` → a list of seeds >= 0.

    ``train`` and ``sweep`` read ``--seeds`` alike; a single seed s is ``"s-s"``.
    """
    try:
        if text.strip().isdigit():
            count = int(text)
            if count < 1:
                raise ValueError
            return list(range(count))
        chosen: list[int] = []
        for part in text.split(","):
            lo, sep, hi = part.strip().partition("-")
            first, last = int(lo), int(hi) if sep else int(lo)
            if first < 0 or last < first:
                raise ValueError
            chosen.extend(range(first, last + 1))
    except ValueError:
        checks.fail(
            "--seeds",
            text,
            "a count N >= 1, a range like '0-9' or a list like '1,4,7' of seeds >= 0",
        )
    twice = sorted({seed for seed in chosen if chosen.count(seed) > 1})
    if twice:  # as a sweep file's seeds, each seed is named once
        raise argparse.ArgumentTypeError(
            f"--seeds must name each seed once, got {text!r} (seed"
            f"{'s' if len(twice) > 1 else ''} {', '.join(map(str, twice))} more than once)"
        )
    return sorted(chosen)


def new_file(option: str):
    """The type of an option that names a file a command writes: a path where nothing is
    yet, so that nothing is overwritten (the command's outputs are tagged ``writes``; a
    test walks them all)."""

    @argument_type
    def parse(text: str) -> Path:
        path = Path(text)
        if path.is_dir():
            raise checks.ConfigError(
                option, f"{option} must be a file path, got the folder {text!r}"
            )
        if path.exists():
            raise checks.ConfigError(
                option, f"{option}: {path} exists; choose a new file, so that it is not overwritten"
            )
        return path

    parse.writes = "file"  # type: ignore[attr-defined]
    return parse


def new_folder(option: str):
    """The type of an option that names a folder a command writes: new, or an empty
    folder, so that nothing in it is overwritten (tagged ``writes`` as :func:`new_file`)."""

    @argument_type
    def parse(text: str) -> Path:
        path = Path(text)
        if path.exists() and not path.is_dir():
            raise checks.ConfigError(option, f"{option}: {path} is a file; give a folder")
        if path.is_dir() and any(path.iterdir()):
            raise checks.ConfigError(
                option,
                f"{option}: {path} is not empty; choose another {option}, or an empty folder, "
                "so that nothing in it is overwritten",
            )
        return path

    parse.writes = "folder"  # type: ignore[attr-defined]
    return parse


#: ``lm prepare --vocab``.
vocab_size = int_at_least("--vocab", 2, " (it counts <eos> and <unk>)")


@argument_type
def fraction(text: str) -> float:
    """``lm prepare --fractions``: a number (the corpus checks their sum)."""
    value = _parsed(float, text)
    if value is None:
        checks.fail("--fractions", text, "numbers")
    return value


def _parent(title: str | None = None):
    """A parent parser, and where its options go: an argument group of that title (which
    merges with the command's group of that title), else the command's own options."""
    parent = argparse.ArgumentParser(add_help=False)
    return parent, parent.add_argument_group(title) if title else parent


def _default(text: str | None) -> str:
    return f" (default: {text})" if text else ""


def ray_options(*, seeds_help: str, per_trial_help: str | None):
    """``--seeds``, ``--seeds-per-trial`` and ``--address``: the seeds of ``train rl``,
    ``sweep`` and ``search``, how they are split into Ray tasks, and the Ray cluster those
    run on; ``seeds_help`` and ``per_trial_help`` end the help of the first two (their
    defaults). ``per_trial_help`` None: no ``--seeds-per-trial`` (a search trial trains
    all its seeds)."""
    parent, options = _parent()
    options.add_argument("--seeds", type=seeds, help=SEEDS_HELP + seeds_help)
    if per_trial_help is not None:
        options.add_argument(
            "--seeds-per-trial",
            type=positive_int("--seeds-per-trial"),
            metavar="N",
            help="split each RL setting's seeds into Ray tasks of N seeds, which Ray can spread "
            "over a cluster's nodes; a seed's results do not depend on N" + per_trial_help,
        )
    options.add_argument(
        "--address",
        help="Ray cluster to join: HOST:PORT of its GCS, ray://HOST:PORT, or 'auto' (the one "
        "`ray start` recorded on this machine) (default: $RAY_ADDRESS, else an embedded "
        "Ray of its own)",
    )
    return parent


def torch_options(device_choices: list[str] | None = None):
    """``--seed``, ``--device`` and ``--threads``: a command that trains with PyTorch in
    this process (checked by :func:`imm_ray.cli.base.use_torch`)."""
    parent, options = _parent()
    options.add_argument("--seed", type=int, default=0, help="random seed")
    options.add_argument(
        "--device", choices=device_choices, default="cpu", help="torch device, e.g. cpu or cuda"
    )
    options.add_argument(
        "--threads",
        type=positive_int("--threads"),
        help="torch CPU threads, >= 1 (default: torch's, one per core; on a busy machine 1 "
        "is often much faster)",
    )
    return parent


def training_options(title: str | None = None, *, epochs: str | None, precision: str | None):
    """``--epochs`` and ``--precision``, which the language models and BERT both take;
    ``epochs`` and ``precision`` say their defaults."""
    parent, options = _parent(title)
    options.add_argument("--epochs", type=int, help="training epochs" + _default(epochs))
    options.add_argument(
        "--precision",
        help="arithmetic of the training passes: fp32, or bf16 (mixed precision; for BERT "
        "also fp16 on a GPU)" + _default(precision),
    )
    return parent


def lm_options(title: str | None = None, *, preset: str | None):
    """``--preset``, ``--max-batches`` and ``--imm-start-ppl`` of an LSTM language model;
    ``preset`` is the default preset (``train lm``), or None where the defaults are an
    experiment's (``sweep``)."""
    parent, options = _parent(title)
    options.add_argument(
        "--preset",
        choices=["small", "paper", "tiny"],
        default=preset,
        help="model size and schedule: the paper's, a small one, or a tiny one for tests",
    )
    options.add_argument(
        "--max-batches",
        type=int,
        help="batches per epoch" + _default(preset and "the preset's"),
    )
    options.add_argument(
        "--imm-start-ppl",
        type=float,
        help="start IMM once validation perplexity is below this"
        + _default(preset and "from the start"),
    )
    return parent


def finetune_options(
    title: str | None = None,
    *,
    dest_prefix: str = "",
    required: tuple[str, ...] = (),
):
    """BERT fine-tuning's options (:class:`~imm_ray.supervised.bert.finetune.FinetuneConfig`'s
    fields but ``data``, ``epochs`` and ``precision``, which :func:`training_options` and
    each command give), stored as ``dest_prefix`` + field. Without a prefix (``train
    bert``) their help says FinetuneConfig's defaults and the ``required`` fields must be
    given; with one (``sweep``) the experiment's settings are their defaults."""
    parent, options = _parent(title)

    def add(flag: str, kind, text: str, default: str | None = None) -> None:
        field = flag.removeprefix("--").replace("-", "_")
        options.add_argument(
            flag,
            dest=dest_prefix + field,
            metavar=field.upper(),
            type=kind,
            required=field in required,
            help=text + ("" if dest_prefix else _default(default)),
        )

    add("--task", str, "cola, mrpc, qnli, rte, acceptability, or a .json task file")
    add(
        "--model",
        str,
        "a BERT checkpoint folder with its tokenizer, or a preset: tiny, small, base (fresh "
        "weights)",
    )
    add(
        "--corpus",
        str,
        "PTB-format folder whose train.txt gives the Kneser–Ney bigram and the histories "
        "(the pretraining corpus); a preset's vocabulary too",
    )
    add(
        "--bigram",
        str,
        "an ARPA bigram over the model's tokenizer (e.g. MODEL/bigram.arpa) instead of "
        "estimating it on --corpus",
    )
    add("--lam", float, "λ >= 0, the weight of IMM", "0.2")
    add("--k", int, "histories per position, >= 1", "5")
    add("--positions", int, "word positions per sentence that carry IMM", "all")
    add("--batch-size", int, "examples per batch", "32")
    add("--lr", float, "AdamW learning rate", "5e-5")
    add("--clip", float, "gradient-norm clip, each loss term separately; 0: none", "1.0")
    add("--max-length", int, "tokens per example", "64")
    add("--max-train-examples", int, "use the first N training examples", "all")
    return parent


def dests(parent: argparse.ArgumentParser) -> list[str]:
    """The fields a parent's options store, in their order."""
    return [action.dest for action in parent._actions]


def corpus_argument():
    """``DIR``, the PTB-format corpus a command reads (as ``corpus``)."""
    parent, options = _parent()
    options.add_argument("corpus", type=Path, metavar="DIR", help="a PTB-format folder")
    return parent


def out_folder(what: str):
    """``--out``, the folder a command writes (:func:`new_folder`); ``what`` it holds."""
    parent, options = _parent()
    options.add_argument(
        "--out",
        type=new_folder("--out"),
        required=True,
        help=f"the {what} folder to write: new, or empty",
    )
    return parent


def resume_option(what: str):
    """``--resume``: continue ``what`` a command stopped by SIGINT left, from its saved
    state; the line such a command ends with is the command with ``--resume``
    (:func:`imm_ray.cli.program.main`)."""
    parent, options = _parent()
    options.add_argument("--resume", action="store_true", help=f"continue {what}")
    return parent


def _mlflow_uri(text: str) -> str:
    try:
        return tracking.tracking_uri(text)
    except tracking.TrackingError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def tracking_option(beside: str):
    """``--mlflow [URI]``: log the command's runs to MLflow (:mod:`imm_ray.tracking`);
    ``beside`` says where the store is without a URI. Given, it needs the ``tracking``
    extra, which :func:`imm_ray.cli.program.main` checks before the command runs."""
    parent, options = _parent()
    options.add_argument(
        "--mlflow",
        nargs="?",
        const=tracking.BESIDE,
        type=_mlflow_uri,
        metavar="URI",
        help="log each trial or run to MLflow (parameters, metrics per step, artifacts) at "
        "URI: sqlite:///PATH, file:PATH or http://HOST:PORT; without a URI, in a SQLite "
        f"store beside the results: {beside} (needs the tracking extra: {tracking.EXTRA})",
    )
    return parent
