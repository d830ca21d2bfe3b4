"""``imm-ray train bert`` and ``imm-ray train bert-pretrain`` (paper Sec. 7.2, Table 2,
App. D.2.2).

Every input is checked before training starts (task files and columns, the model and its
MLM head, the tokenizer, λ, k, the corpus and its bigram); bad input exits with status 2
and ``imm-ray: error: …``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from imm_ray import tracking
from imm_ray.cli.base import add_command, from_options, use_torch, warn_unused
from imm_ray.cli.options import (
    finetune_options,
    new_folder,
    out_folder,
    torch_options,
    tracking_option,
    training_options,
)

#: The options that only some methods read (FinetuneConfig's fields of those names): given
#: with another --method, they are warned of. (--corpus is read by every method when the
#: model is a preset: its vocabulary.)
METHOD_OPTIONS = {
    "bigram": ("imm",),
    "lam": ("imm",),
    "k": ("imm",),
    "positions": ("imm",),
}


#: The loss terms ``finetune`` returns that transformers' MLflow callback logs as they go.
LOGGED_TERMS = ("task_loss", "mlm_loss", "imm_risk")


def add_bert_commands(kinds) -> None:
    """Adds ``train bert`` and ``train bert-pretrain`` to the ``train`` subparsers."""
    bert = add_command(
        kinds,
        "bert",
        _train_bert,
        help="fine-tune BERT on a task: base, +MLM, or +MLM+IMM against the Kneser–Ney bigram",
        parents=[
            finetune_options(required=("task", "model")),
            training_options(epochs="3", precision="fp32"),
            torch_options(["cpu", "cuda"]),
            tracking_option(
                "mlflow.db beside --output-dir, else in results/; a run per invocation, "
                "through transformers' MLflow callback"
            ),
        ],
    )
    bert.add_argument(
        "--data", help="the task's folder of GLUE-layout TSV files (train/dev[/test].tsv)"
    )
    bert.add_argument("--method", choices=["base", "mlm", "imm"], default="imm", help="the loss")
    bert.add_argument(
        "--output-dir",
        type=new_folder("--output-dir"),
        help="where Trainer's files go: new, or empty (default: a temporary folder)",
    )

    pre = add_command(
        kinds,
        "bert-pretrain",
        _pretrain,
        help="pretrain a small BERT with MLM on a PTB-format corpus",
        parents=[torch_options(["cpu", "cuda"]), out_folder("model")],
    )
    pre.add_argument("--data", type=Path, required=True, help="a PTB-format folder")
    pre.add_argument("--preset", choices=["tiny", "small", "base"], default="small", help="size")
    pre.add_argument("--steps", type=int, default=2000, help="optimizer steps")
    pre.add_argument("--batch-size", type=int, default=64, help="sentences per step")
    pre.add_argument("--lr", type=float, default=5e-4, help="AdamW learning rate")
    pre.add_argument("--max-length", type=int, default=64, help="tokens per sentence")
    pre.add_argument(
        "--precision", choices=["fp32", "bf16", "fp16"], default="fp32", help="arithmetic"
    )


def _train_bert(args: argparse.Namespace) -> int:
    """Fine-tune a BERT checkpoint on a GLUE-layout task with the paper's loss (App. D.2.2):
    the task loss, plus the MLM loss (--method mlm), plus λ·IMM within MLM against the
    Kneser–Ney bigram of --corpus (--method imm). Prints the task's metric (MCC, F1 or
    accuracy) on dev and, when labeled, test."""
    import tempfile

    from imm_ray.console import quiet_transformers
    from imm_ray.progress import Progress
    from imm_ray.supervised.bert.finetune import FinetuneConfig, finetune, prepare_run

    warn_unused(args, args.method, METHOD_OPTIONS)
    config = from_options(FinetuneConfig, args)
    use_torch(args.threads, config.device)
    tracked = None
    # Opened before any work: a bad store is a usage error.
    results_folder = args.output_dir.parent if args.output_dir else Path("results")
    store = tracking.open_store(args.mlflow, results_folder, "train-bert")
    quiet_transformers()
    run = prepare_run(config)
    if store is not None:
        fields = dataclasses.asdict(config)
        params = {key: value for key, value in fields.items() if value is not None}
        name = f"{config.method}-seed{config.seed}"
        if args.output_dir is None:  # a run that keeps no files
            tracked = store.start_run(name, params)
        else:
            tracked = store.command_run(args.output_dir, name, params)
    with tracking.running(tracked, active_uri=None if store is None else store.uri):
        start = time.perf_counter()
        callbacks = None if tracked is None else [tracking.training_callback()]
        with tempfile.TemporaryDirectory(prefix="imm-ray-bert-") as scratch:
            output_dir = args.output_dir or scratch
            results = finetune(run, output_dir, progress=Progress(), callbacks=callbacks)
        if tracked is not None:  # the loss terms' last values are the callback's already
            final = {k: v for k, v in results.items() if k not in LOGGED_TERMS}
            tracked.log_metrics(final, int(results["steps"]))
    metric = run.spec.metric
    print(
        f"{run.spec.name}: {config.method}, model {config.model}, seed {config.seed}, "
        f"{config.epochs} epochs, {int(results['steps'])} steps, "
        f"{time.perf_counter() - start:.0f} s"
    )
    line = f"dev {metric} {results[f'dev_{metric}']:.4f}"
    if f"test_{metric}" in results:
        line += f", test {metric} {results[f'test_{metric}']:.4f}"
    print(line)
    if store is not None:
        print(f"mlflow: {store.uri}")
    sys.stdout.flush()
    return 0


def _pretrain(args: argparse.Namespace) -> int:
    """Pretrain a BERT with the masked-LM loss on DATA/train.txt (one sentence per example)
    through transformers, with a word-level tokenizer over the corpus's vocabulary, and save
    model and tokenizer under --out for `train bert --model`."""
    from imm_ray.console import quiet_transformers
    from imm_ray.progress import Progress
    from imm_ray.supervised.bert.pretrain import PretrainConfig, pretrain
    from imm_ray.supervised.lm.corpus import load_corpus

    config = from_options(PretrainConfig, args)
    use_torch(args.threads, config.device)
    load_corpus(args.data)  # checks the folder before anything is built
    quiet_transformers()
    results = pretrain(config, args.data, args.out, progress=Progress())
    print(
        f"{args.out}: {config.preset} BERT, {int(results['parameters']):,} parameters, "
        f"{config.steps} steps of {config.batch_size} sentences in {results['seconds']:.0f} s; "
        f"MLM loss train {results['train_loss']:.3f}, valid {results['valid_loss']:.3f}"
    )
    return 0
