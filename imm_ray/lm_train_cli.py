"""``imm-ray train lm``: an LSTM language model with or without IMM against the Kneser–Ney
bigram (paper Sec. 7.2, Tables 1 and 5), and the ``--data``/``--preset`` options that
``imm-ray sweep`` passes to the language-model experiments.

Every input is checked before training starts; bad input exits with status 2 and
``imm-ray: error: …``. A checkpoint is written (atomically) after every epoch;
``--resume`` continues from it, and SIGINT (Ctrl+C) ends with the command that does.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from imm_ray.console import Interrupted
from imm_ray.lm_cli import guarded

#: LMConfig fields that ``train lm`` and ``sweep`` take as options (flag → field, type, help).
CONFIG_OPTIONS = (
    ("--epochs", "epochs", int, "training epochs (default: the preset's)"),
    ("--max-batches", "max_batches", int, "batches per epoch (default: the preset's)"),
    (
        "--imm-start-ppl",
        "imm_start_ppl",
        float,
        "start IMM once validation perplexity is below this (default: from the start)",
    ),
    (
        "--precision",
        "precision",
        str,
        "arithmetic of the training passes: fp32, or bf16 (mixed precision; for BERT "
        "also fp16 on a GPU) [fp32]",
    ),
)


def add_train_lm(kinds, usage_error: type[Exception]) -> None:
    """Adds ``train lm`` to the ``train`` subparsers."""
    lm = kinds.add_parser(
        "lm",
        help="an LSTM language model with IMM (or noising) against the Kneser–Ney bigram",
        description=(
            "Train a stateful LSTM language model on a PTB-format folder (paper Sec. 7.2): "
            "without IMM, with Kneser–Ney noising, with k-sampled IMM or with serialized IMM "
            "against the folder's modified Kneser–Ney bigram. Prints validation and test "
            "perplexity and the model's induced-bigram perplexity next to the bigram's "
            "(Table 5). A checkpoint is saved after every epoch; --resume continues it."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    lm.add_argument("--data", type=Path, required=True, help="a PTB-format folder")
    lm.add_argument("--preset", choices=["small", "paper", "tiny"], default="small")
    lm.add_argument("--method", choices=["none", "noising", "imm", "serialized"], default="imm")
    lm.add_argument("--lam", type=float, default=None, help="λ >= 0 [preset: 0.2]")
    lm.add_argument("--k", type=int, default=None, help="histories per position, >= 1 [10]")
    lm.add_argument("--every", type=int, default=None, help="j: k samples every j-th batch [5]")
    lm.add_argument("--unroll", type=int, default=None, help="tokens per row and batch, >= 2")
    for flag, _, kind, text in CONFIG_OPTIONS:
        lm.add_argument(flag, type=kind, default=None, help=text)
    lm.add_argument(
        "--memory-bounded",
        action="store_true",
        help="back-propagate the k histories one sample at a time",
    )
    lm.add_argument("--refresh-every", type=int, default=None, help="r of serialized IMM [200]")
    lm.add_argument("--gamma0", type=float, default=None, help="γ0 of KN noising [0.2]")
    lm.add_argument("--seed", type=int, default=0)
    lm.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    lm.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads, >= 1 (default: torch's, one per core; on a busy machine 1 "
        "is often much faster)",
    )
    lm.add_argument(
        "--arpa",
        type=Path,
        default=None,
        help="read the target bigram from this ARPA file (its vocabulary must be DATA's) "
        "instead of estimating it from DATA/train.txt",
    )
    lm.add_argument(
        "--checkpoint-dir",
        type=Path,
        default=None,
        help="where the per-epoch checkpoint goes (default: lm-checkpoints/METHOD-seedSEED)",
    )
    lm.add_argument("--resume", action="store_true", help="continue from --checkpoint-dir")
    lm.set_defaults(handler=guarded(_train_lm, usage_error))


def add_sweep_lm_options(sweep: argparse.ArgumentParser) -> None:
    """Adds the options of the language-model experiments to ``imm-ray sweep``."""
    group = sweep.add_argument_group("language-model experiments (table1, table5, lm-lambda)")
    group.add_argument("--data", default=None, help="the PTB-format folder")
    group.add_argument("--preset", choices=["small", "paper", "tiny"], default=None)
    for flag, _, kind, text in CONFIG_OPTIONS:
        group.add_argument(flag, type=kind, default=None, help=text)


def lm_sweep_overrides(args: argparse.Namespace, experiment) -> dict:
    """The language-model options given to ``sweep``, for ``with_overrides``; they are an
    error for other kinds of experiment."""
    given = {"data": args.data, "preset": args.preset}
    given.update({field: getattr(args, field) for _, field, _, _ in CONFIG_OPTIONS})
    given = {k: v for k, v in given.items() if v is not None}
    if getattr(experiment, "kind", None) != "lm":
        if getattr(experiment, "kind", None) == "bert":
            # table2 reads --data, --epochs and --precision too
            # (imm_ray.bert_cli.bert_sweep_overrides).
            for shared in ("data", "epochs", "precision"):
                given.pop(shared, None)
        if given:
            flags = ", ".join("--" + k.replace("_", "-") for k in given)
            raise ValueError(f"{flags} apply to language-model experiments only")
        return {}
    return given


def _train_lm(args: argparse.Namespace) -> int:
    from imm_ray.supervised.lm.train import CHECKPOINT_FILE, LMConfig, stderr_progress, train_lm

    config = LMConfig.preset(
        args.preset,
        method=args.method,
        lam=args.lam,
        k=args.k,
        every=args.every,
        unroll=args.unroll,
        epochs=args.epochs,
        max_batches=args.max_batches,
        imm_start_ppl=args.imm_start_ppl,
        precision=args.precision,
        memory_bounded=args.memory_bounded or None,
        refresh_every=args.refresh_every,
        gamma0=args.gamma0,
        seed=args.seed,
        device=args.device,
    )
    import torch

    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be an integer >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if config.device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {config.device!r}: no CUDA device is available")
    folder = args.checkpoint_dir or Path("lm-checkpoints") / f"{config.method}-seed{config.seed}"
    exists = (folder / CHECKPOINT_FILE).is_file()
    if args.resume and not exists:
        raise ValueError(f"--resume: no checkpoint at {folder / CHECKPOINT_FILE}")
    if exists and not args.resume:
        raise ValueError(
            f"{folder} already holds a checkpoint; pass --resume to continue it, or choose "
            "another --checkpoint-dir"
        )
    from imm_ray.restricted.arpa import read_arpa
    from imm_ray.restricted.kneser_ney import estimate_kneser_ney
    from imm_ray.supervised.lm.corpus import load_corpus

    corpus = load_corpus(args.data)
    if args.arpa is not None:
        bigram, _ = read_arpa(args.arpa, corpus.vocab.words)
    else:
        bigram = estimate_kneser_ney(corpus.train, len(corpus.vocab), corpus.vocab.eos_id)
    from imm_ray._memory import reuse_freed_memory

    reuse_freed_memory()  # this process is the command's own: its allocator, its choice
    start = time.perf_counter()
    try:
        trainer, results = train_lm(
            config,
            corpus,
            bigram,
            checkpoint_dir=folder,
            resume=args.resume,
            progress=stderr_progress,
        )
    except KeyboardInterrupt:
        if sys.stderr.isatty():
            sys.stderr.write("\n")  # ends the updating progress line
        # Checkpoints are written whole (atomically) after each epoch.
        raise Interrupted(resumable=(folder / CHECKPOINT_FILE).is_file()) from None
    seconds = time.perf_counter() - start
    print(
        f"{args.data}: {config.method}, preset {args.preset}, seed {config.seed}, "
        f"{trainer.epoch} epochs, {seconds:.0f} s"
    )
    print(f"valid perplexity {results['valid_ppl']:.2f}, test perplexity {results['test_ppl']:.2f}")
    print(f"{'split':<6} {'induced bigram':>15} {'Kneser–Ney':>11}")
    for split in ("train", "valid", "test"):
        induced, kn = results[f"induced_{split}_ppl"], results[f"kn_{split}_ppl"]
        print(f"{split:<6} {induced:>15.2f} {kn:>11.2f}")
    print(f"checkpoint: {folder / CHECKPOINT_FILE}")
    sys.stdout.flush()
    return 0
