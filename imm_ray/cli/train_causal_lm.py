"""``imm-ray train causal-lm``: a causal Hugging Face language model (GPT-2 from fresh
weights at a preset's size, or any causal LM folder saved with ``save_pretrained``) with
or without IMM against the Kneser–Ney bigram over the corpus's words.

Every input is checked before training starts; bad input exits with status 2 and
``imm-ray: error: …``. A checkpoint is written after every epoch; ``--resume`` continues
from the newest, and SIGINT (Ctrl+C) ends with the command that does.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from imm_ray import tracking
from imm_ray.cli.base import add_command, use_torch, warn_unused
from imm_ray.cli.options import (
    int_at_least,
    resume_option,
    torch_options,
    tracking_option,
    training_options,
)
from imm_ray.console import Interrupted

#: The options that only some methods read: given with another --method, they are warned of.
METHOD_OPTIONS = {
    "lam": ("imm", "serialized"),
    "k": ("imm",),
    "every": ("imm",),
    "refresh_every": ("serialized",),
    "positions": ("serialized",),
    "gamma0": ("noising",),
    "clip_terms": ("imm", "serialized"),
}


def add_train_causal_lm(kinds) -> None:
    """Adds ``train causal-lm`` to the ``train`` subparsers."""
    command = add_command(
        kinds,
        "causal-lm",
        _train_causal_lm,
        help="a causal Hugging Face LM (GPT-2, Llama, …) with IMM against the Kneser–Ney bigram",
        parents=[
            training_options(epochs="the preset's", precision="fp32"),
            torch_options(),
            resume_option("the training whose checkpoints are in --output-dir"),
            tracking_option(
                "mlflow.db beside --output-dir (causal-lm/mlflow.db); a run per invocation, "
                "through transformers' MLflow callback"
            ),
        ],
    )
    command.add_argument(
        "--data",
        type=Path,
        required=True,
        help="a PTB-format folder, or with --tokenizer a folder of raw text "
        "(train.txt, valid.txt, test.txt)",
    )
    command.add_argument(
        "--tokenizer",
        help="read DATA as raw text through this tokenizer (a save_pretrained folder, or a "
        "name in the Hugging Face cache; never downloaded), over its ids",
    )
    source = command.add_argument_group("the model (one of)")
    source.add_argument(
        "--model",
        type=Path,
        help="a causal LM folder saved with save_pretrained, over DATA's words (its "
        "vocab.txt) or --tokenizer's ids",
    )
    source.add_argument(
        "--preset",
        choices=["tiny", "small"],
        help="fresh GPT-2 weights of this size over DATA's words or --tokenizer's ids "
        "(default: small)",
    )
    command.add_argument(
        "--method",
        choices=["none", "noising", "imm", "serialized"],
        default="imm",
        help="no IMM, Kneser–Ney noising, sampled IMM or serialized IMM",
    )
    command.add_argument("--lam", type=float, help="λ >= 0 (default: 0.2)")
    command.add_argument(
        "--k", type=int_at_least("--k", 1), help="windows per row, >= 1 (default: 10)"
    )
    command.add_argument(
        "--every",
        type=int_at_least("--every", 1),
        help="j: k windows every j-th step, 1 on the others (default: 5)",
    )
    command.add_argument(
        "--refresh-every",
        type=int_at_least("--refresh-every", 1),
        help="r of serialized IMM, in steps (default: 50)",
    )
    command.add_argument(
        "--positions",
        type=int_at_least("--positions", 1),
        help="positions per row drawn to carry serialized IMM, each weighted by the "
        "row's positions over this many (default: all of them)",
    )
    command.add_argument("--gamma0", type=float, help="γ0 of KN noising (default: 0.2)")
    command.add_argument(
        "--clip", type=float, help="gradient-norm bound, >= 0; 0: none (default: 1.0)"
    )
    command.add_argument(
        "--clip-terms",
        choices=["separately", "together"],
        help="clip the IMM term's gradient apart from the LM term's (App. D.2.2) or their "
        "sum (default: separately for imm, together for serialized, whose two terms are "
        "one soft-target cross-entropy)",
    )
    command.add_argument(
        "--context",
        type=int_at_least("--context", 2),
        help="tokens the model reads per window, >= 2 (default: the preset's)",
    )
    command.add_argument(
        "--batch-size", type=int_at_least("--batch-size", 1), help="windows per step"
    )
    command.add_argument(
        "--max-steps",
        type=int_at_least("--max-steps", 1),
        help="optimizer steps in all, instead of --epochs",
    )
    command.add_argument(
        "--arpa",
        type=Path,
        help="read the target bigram from this ARPA file (its vocabulary must be DATA's "
        "words or the tokenizer's tokens) instead of estimating it from DATA/train.txt",
    )
    command.add_argument(
        "--output-dir",
        type=Path,
        help="where the checkpoints and the trained model go (default: causal-lm/METHOD-seedSEED)",
    )


def _train_causal_lm(args: argparse.Namespace) -> int:
    """Train a causal Hugging Face language model on a PTB-format folder, or on raw text
    read through --tokenizer: without IMM, with Kneser–Ney noising, with sampled IMM or
    with serialized IMM against the corpus's modified Kneser–Ney bigram over the model's
    token ids. --preset trains GPT-2 from fresh weights over the folder's words (or the
    tokenizer's ids); --model fine-tunes a causal LM saved with save_pretrained over the
    same words (a folder this command wrote, or any with a vocab.txt of them) or ids.
    Prints validation and test perplexity and the model's induced-bigram perplexity next
    to the bigram's (Table 5's definition). A checkpoint is kept per epoch; --resume
    continues from it."""
    from imm_ray.supervised.hf_lm.train import CausalLMConfig, latest_checkpoint

    if args.model is not None and args.preset is not None:
        raise ValueError("--model and --preset: give one (a saved model, or fresh weights)")
    warn_unused(args, args.method, METHOD_OPTIONS)
    options = {
        "method": args.method,
        "lam": args.lam,
        "k": args.k,
        "every": args.every,
        "refresh_every": args.refresh_every,
        "positions": args.positions,
        "gamma0": args.gamma0,
        "clip": args.clip,
        "clip_separately": None if args.clip_terms is None else args.clip_terms == "separately",
        "context": args.context,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "max_steps": args.max_steps,
        "precision": args.precision,
        "seed": args.seed,
        "device": args.device,
    }
    config = CausalLMConfig.preset(args.preset or "small", **options)  # checked before work
    use_torch(args.threads, config.device)
    folder = args.output_dir or Path("causal-lm") / f"{config.method}-seed{config.seed}"
    holds = folder.is_dir() and any(folder.iterdir())
    if args.resume and latest_checkpoint(folder) is None:
        raise ValueError(f"--resume: no checkpoint in {folder}")
    if holds and not args.resume:
        raise ValueError(
            f"{folder} already holds files; pass --resume to continue its checkpoints, or "
            "choose another --output-dir"
        )
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--output-dir {folder} is a file; give a folder")
    # Opened before any work: a bad store is a usage error.
    store = tracking.open_store(args.mlflow, folder.parent, "train-causal-lm")
    _train(args, config, folder, store)
    if store is not None:
        print(f"mlflow: {store.uri}")
    sys.stdout.flush()
    return 0


def _train(args: argparse.Namespace, config, folder: Path, store: tracking.Store | None) -> None:
    """Reads the data, trains (with ``store``, as an MLflow run: transformers' MLflow
    callback logs each step, then the run gets the final metrics) and prints the
    results."""
    from imm_ray.restricted.arpa import read_arpa
    from imm_ray.restricted.kneser_ney import estimate_kneser_ney
    from imm_ray.supervised.hf_lm.train import latest_checkpoint
    from imm_ray.supervised.lm.corpus import load_corpus

    tokenizer = None
    if args.tokenizer is not None:
        from imm_ray.supervised.hf_lm.data import load_tokenizer, read_tokenized

        tokenizer = load_tokenizer(args.tokenizer)
        corpus = read_tokenized(args.data, tokenizer)
    else:
        corpus = load_corpus(args.data)
    model = None
    ids = len(corpus.vocab)
    if args.model is not None:
        from imm_ray.supervised.hf_lm.train import load_model, model_positions

        words = None if tokenizer is not None else list(corpus.vocab.words)
        model = load_model(args.model, words, tokens=len(corpus.vocab))
        ids = model.get_output_embeddings().weight.shape[0]  # may exceed the tokenizer's
        if args.context is None:  # the small preset's, or as many as the model reads
            config = config.replace(context=min(config.context, model_positions(model) - 1))
    if args.arpa is not None:
        bigram, _ = read_arpa(args.arpa, corpus.vocab.words)
        if bigram.vocab_size != ids:
            raise ValueError(
                f"--arpa {args.arpa}: its {bigram.vocab_size} words are not the {ids} ids "
                "the model predicts"
            )
    else:
        bigram = estimate_kneser_ney(corpus.train, ids, corpus.vocab.eos_id)
    from imm_ray.progress import Progress
    from imm_ray.supervised.hf_lm.train import train_causal_lm

    run = None
    if store is not None:  # the configuration, its context as the model allows
        given = {
            "data": args.data,
            "tokenizer": args.tokenizer,
            "model": args.model,
            "preset": None if args.model is not None else args.preset or "small",
            **dataclasses.asdict(config),
        }
        params = {key: value for key, value in given.items() if value is not None}
        name = f"{config.method}-seed{config.seed}"
        run = store.command_run(folder, name, params, resume=args.resume)
    with tracking.running(run, active_uri=None if store is None else store.uri):
        try:
            model, results = train_causal_lm(
                config,
                corpus,
                bigram,
                folder,
                model=model,
                resume=args.resume,
                progress=Progress(),
                tokenizer=tokenizer,
                more_callbacks=None if run is None else [tracking.training_callback()],
            )
        except KeyboardInterrupt:
            raise Interrupted(resumable=latest_checkpoint(folder) is not None) from None
        if run is not None:
            run.log_metrics(results, int(results["steps"]))
    name = f"--model {args.model}" if args.model is not None else f"preset {args.preset or 'small'}"
    print(
        f"{args.data}: {type(model).__name__} ({name}), {config.method}, seed {config.seed}, "
        f"{results['steps']:.0f} steps, {results['train_seconds']:.0f} s"
    )
    print(f"valid perplexity {results['valid_ppl']:.2f}, test perplexity {results['test_ppl']:.2f}")
    print(f"{'split':<6} {'induced bigram':>15} {'Kneser–Ney':>11}")
    for split in ("train", "valid", "test"):
        induced, kn = results[f"induced_{split}_ppl"], results[f"kn_{split}_ppl"]
        print(f"{split:<6} {induced:>15.2f} {kn:>11.2f}")
    print(f"model: {folder / 'model'}")
