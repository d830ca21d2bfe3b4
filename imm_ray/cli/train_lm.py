"""``imm-ray train lm``: an LSTM language model with or without IMM against the Kneser–Ney
bigram (paper Sec. 7.2, Tables 1 and 5).

Every input is checked before training starts; bad input exits with status 2 and
``imm-ray: error: …``. A checkpoint is written (atomically) after every epoch;
``--resume`` continues from it, and SIGINT (Ctrl+C) ends with the command that does.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from imm_ray import tracking
from imm_ray.cli.base import add_command, use_torch, warn_unused
from imm_ray.cli.options import (
    lm_options,
    resume_option,
    torch_options,
    tracking_option,
    training_options,
)
from imm_ray.console import Interrupted

#: The options that only some methods read (LMConfig's fields of those names): given with
#: another --method, they are warned of.
METHOD_OPTIONS = {
    "lam": ("imm", "serialized"),
    "k": ("imm",),
    "every": ("imm",),
    "memory_bounded": ("imm",),
    "imm_start_ppl": ("imm", "serialized"),
    "refresh_every": ("serialized",),
    "gamma0": ("noising",),
}


def add_train_lm(kinds) -> None:
    """Adds ``train lm`` to the ``train`` subparsers."""
    lm = add_command(
        kinds,
        "lm",
        _train_lm,
        help="an LSTM language model with IMM (or noising) against the Kneser–Ney bigram",
        parents=[
            lm_options(preset="small"),
            training_options(epochs="the preset's", precision="fp32"),
            torch_options(),
            resume_option("the training whose checkpoint is in --checkpoint-dir"),
            tracking_option(
                "mlflow.db beside --checkpoint-dir (lm-checkpoints/mlflow.db); a run per "
                "invocation, per-epoch metrics"
            ),
        ],
    )
    lm.add_argument("--data", type=Path, required=True, help="a PTB-format folder")
    lm.add_argument(
        "--method",
        choices=["none", "noising", "imm", "serialized"],
        default="imm",
        help="no IMM, Kneser–Ney noising, k-sampled IMM or serialized IMM",
    )
    preset = " (default: the preset's)"
    lm.add_argument("--lam", type=float, help="λ >= 0 (default: 0.2)")
    lm.add_argument("--k", type=int, help="histories per position, >= 1" + preset)
    lm.add_argument("--every", type=int, help="j: k samples every j-th batch" + preset)
    lm.add_argument("--unroll", type=int, help="tokens per row and batch, >= 2" + preset)
    lm.add_argument(
        "--memory-bounded",
        action="store_true",
        help="back-propagate the k histories one sample at a time",
    )
    lm.add_argument("--refresh-every", type=int, help="r of serialized IMM" + preset)
    lm.add_argument("--gamma0", type=float, help="γ0 of KN noising (default: 0.2)")
    lm.add_argument(
        "--arpa",
        type=Path,
        help="read the target bigram from this ARPA file (its vocabulary must be DATA's) "
        "instead of estimating it from DATA/train.txt",
    )
    lm.add_argument(
        "--checkpoint-dir",
        type=Path,
        help="where the per-epoch checkpoint goes (default: lm-checkpoints/METHOD-seedSEED)",
    )


def _train_lm(args: argparse.Namespace) -> int:
    """Train a stateful LSTM language model on a PTB-format folder (paper Sec. 7.2): without
    IMM, with Kneser–Ney noising, with k-sampled IMM or with serialized IMM against the
    folder's modified Kneser–Ney bigram. Prints validation and test perplexity and the
    model's induced-bigram perplexity next to the bigram's (Table 5). A checkpoint is saved
    after every epoch; --resume continues it."""
    from imm_ray.supervised.lm.train import CHECKPOINT_FILE, LMConfig

    warn_unused(args, args.method, METHOD_OPTIONS)
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
    use_torch(args.threads, config.device)
    folder = args.checkpoint_dir or Path("lm-checkpoints") / f"{config.method}-seed{config.seed}"
    exists = (folder / CHECKPOINT_FILE).is_file()
    if args.resume and not exists:
        raise ValueError(f"--resume: no checkpoint at {folder / CHECKPOINT_FILE}")
    if exists and not args.resume:
        raise ValueError(
            f"{folder} already holds a checkpoint; pass --resume to continue it, or choose "
            "another --checkpoint-dir"
        )
    # Opened before any work: a bad store is a usage error.
    store = tracking.open_store(args.mlflow, folder.parent, "train-lm")
    _train(args, config, folder, store)
    if store is not None:
        print(f"mlflow: {store.uri}")
    sys.stdout.flush()
    return 0


def _train(args: argparse.Namespace, config, folder: Path, store: tracking.Store | None) -> None:
    """Reads the data, trains (with ``store``, as an MLflow run: each epoch's metrics, then
    the final ones) and prints the results."""
    from imm_ray.progress import Progress
    from imm_ray.restricted.arpa import read_arpa
    from imm_ray.restricted.kneser_ney import estimate_kneser_ney
    from imm_ray.supervised.lm.corpus import load_corpus
    from imm_ray.supervised.lm.train import CHECKPOINT_FILE, train_lm

    corpus = load_corpus(args.data)
    if args.arpa is not None:
        bigram, _ = read_arpa(args.arpa, corpus.vocab.words)
    else:
        bigram = estimate_kneser_ney(corpus.train, len(corpus.vocab), corpus.vocab.eos_id)
    from imm_ray._memory import reuse_freed_memory

    reuse_freed_memory()  # this process is the command's own: its allocator, its choice
    run = None
    if store is not None:
        given = {"data": args.data, "preset": args.preset, "arpa": args.arpa}
        given.update(dataclasses.asdict(config))
        params = {key: value for key, value in given.items() if value is not None}
        name = f"{config.method}-seed{config.seed}"
        run = store.command_run(folder, name, params, resume=args.resume)

    def logged(lm, metrics: dict[str, float]) -> None:
        run.log_metrics(metrics, lm.epoch)

    start = time.perf_counter()
    with tracking.running(run):
        try:
            trainer, results = train_lm(
                config,
                corpus,
                bigram,
                checkpoint_dir=folder,
                resume=args.resume,
                progress=Progress(),
                on_epoch=None if run is None else logged,
            )
        except KeyboardInterrupt:
            # Checkpoints are written whole (atomically) after each epoch.
            raise Interrupted(resumable=(folder / CHECKPOINT_FILE).is_file()) from None
        if run is not None:
            run.log_metrics(results, trainer.epoch)
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
