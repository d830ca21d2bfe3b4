"""``imm-ray train bert``, ``imm-ray train bert-pretrain`` and ``imm-ray lm make-acceptability``
(paper Sec. 7.2, Table 2, App. D.2.2), and the options ``imm-ray sweep table2`` takes.

Every input is checked before training starts (task files and columns, the model and its
MLM head, the tokenizer, λ, k, the corpus and its bigram); bad input exits with status 2
and ``imm-ray: error: …``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from imm_ray.lm_cli import check_new_folder, guarded

#: FinetuneConfig fields that ``train bert`` and ``sweep table2`` share (flag, field, type, help).
FINETUNE_OPTIONS = (
    ("--task", "task", str, "cola, mrpc, qnli, rte, acceptability, or a .json task file"),
    ("--data", "data", str, "the task's folder of GLUE-layout TSV files (train/dev[/test].tsv)"),
    (
        "--model",
        "model",
        str,
        "a BERT checkpoint folder with its tokenizer, or a preset: tiny, "
        "small, base (fresh weights)",
    ),
    (
        "--corpus",
        "corpus",
        str,
        "PTB-format folder whose train.txt gives the Kneser–Ney bigram "
        "and the histories (the pretraining corpus); a preset's vocabulary too",
    ),
    (
        "--bigram",
        "bigram",
        str,
        "an ARPA bigram over the model's tokenizer (e.g. MODEL/bigram.arpa) instead of "
        "estimating it on --corpus",
    ),
    ("--lam", "lam", float, "λ >= 0, the weight of IMM [0.2]"),
    ("--k", "k", int, "histories per position, >= 1 [5]"),
    ("--positions", "positions", int, "word positions per sentence that carry IMM [all]"),
    ("--epochs", "epochs", int, "fine-tuning epochs [3]"),
    ("--batch-size", "batch_size", int, "examples per batch [32]"),
    ("--lr", "lr", float, "AdamW learning rate [5e-5]"),
    ("--clip", "clip", float, "gradient-norm clip, each loss term separately; 0: none [1.0]"),
    ("--max-length", "max_length", int, "tokens per example [64]"),
    ("--max-train-examples", "max_train_examples", int, "use the first N training examples"),
    ("--precision", "precision", str, "fp32, or bf16 / fp16 autocast on a GPU [fp32]"),
)


#: ``sweep`` options the language-model experiments define too; table2 reads them as well.
SHARED_SWEEP_FLAGS = ("--data", "--epochs", "--precision")


def _add_finetune_options(parser, required: tuple[str, ...] = ()) -> None:
    for flag, field, kind, text in FINETUNE_OPTIONS:
        parser.add_argument(
            flag, dest=field, type=kind, default=None, help=text, required=field in required
        )


def add_bert_commands(kinds, usage_error: type[Exception]) -> None:
    """Adds ``train bert`` and ``train bert-pretrain`` to the ``train`` subparsers."""
    bert = kinds.add_parser(
        "bert",
        help="fine-tune BERT on a task: base, +MLM, or +MLM+IMM against the Kneser–Ney bigram",
        description=(
            "Fine-tune a BERT checkpoint on a GLUE-layout task with the paper's loss "
            "(App. D.2.2): the task loss, plus the MLM loss (--method mlm), plus λ·IMM within "
            "MLM against the Kneser–Ney bigram of --corpus (--method imm). Prints the task's "
            "metric (MCC, F1 or accuracy) on dev and, when labeled, test."
        ),
    )
    _add_finetune_options(bert, required=("task", "model"))
    bert.add_argument("--method", choices=["base", "mlm", "imm"], default="imm")
    bert.add_argument("--seed", type=int, default=0)
    bert.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    bert.add_argument("--threads", type=int, default=None, help="torch CPU threads, >= 1")
    bert.add_argument(
        "--output-dir",
        type=Path,
        default=None,
        help="where Trainer's files go (default: a temporary folder)",
    )
    bert.set_defaults(handler=guarded(_train_bert, usage_error))

    pre = kinds.add_parser(
        "bert-pretrain",
        help="pretrain a small BERT with MLM on a PTB-format corpus",
        description=(
            "Pretrain a BERT with the masked-LM loss on DATA/train.txt (one sentence per "
            "example) through transformers, with a word-level tokenizer over the corpus's "
            "vocabulary, and save model and tokenizer under --out for `train bert --model`."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    pre.add_argument("--data", type=Path, required=True, help="a PTB-format folder")
    pre.add_argument(
        "--out", type=Path, required=True, help="the model folder to write: new, or empty"
    )
    pre.add_argument("--preset", choices=["tiny", "small", "base"], default="small")
    pre.add_argument("--steps", type=int, default=2000, help="optimizer steps")
    pre.add_argument("--batch-size", type=int, default=64, help="sentences per step")
    pre.add_argument("--lr", type=float, default=5e-4, help="AdamW learning rate")
    pre.add_argument("--max-length", type=int, default=64, help="tokens per sentence")
    pre.add_argument("--seed", type=int, default=0)
    pre.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    pre.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    pre.add_argument("--threads", type=int, default=None, help="torch CPU threads, >= 1")
    pre.set_defaults(handler=guarded(_pretrain, usage_error))


def add_make_acceptability(lm_kinds, usage_error: type[Exception]) -> None:
    """Adds ``lm make-acceptability`` to the ``lm`` subparsers."""
    make = lm_kinds.add_parser(
        "make-acceptability",
        help="build a CoLA-format acceptability task from a PTB-format corpus",
        description=(
            "Write train.tsv, dev.tsv and test.tsv (CoLA's layout) from DIR's train, valid and "
            "test splits: label 1 an original sentence, label 0 the sentence with two adjacent "
            "words swapped or one word replaced by a vocabulary word; balanced classes."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    make.add_argument("corpus", type=Path, metavar="DIR", help="a PTB-format folder")
    make.add_argument(
        "--out", type=Path, required=True, help="the task folder to write: new, or empty"
    )
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--min-words", type=int, default=4, help="shortest sentence used")
    make.add_argument("--max-words", type=int, default=30, help="longest sentence used")
    make.add_argument("--max-examples", type=int, default=None, help="cap on each split's examples")
    make.set_defaults(handler=guarded(_make_acceptability, usage_error))


def add_sweep_bert_options(sweep: argparse.ArgumentParser) -> None:
    """Adds the options of the BERT experiments (table2) to ``imm-ray sweep``."""
    group = sweep.add_argument_group("BERT experiments (table2)")
    for flag, field, kind, text in FINETUNE_OPTIONS:
        if flag in SHARED_SWEEP_FLAGS:
            continue
        group.add_argument(flag, dest=f"bert_{field}", type=kind, default=None, help=text)


def bert_sweep_overrides(args: argparse.Namespace, experiment) -> dict:
    """The BERT options given to ``sweep`` (``--data`` included), for ``with_overrides``;
    an error for other kinds of experiment."""
    given = {
        field: getattr(args, f"bert_{field}")
        for flag, field, _, _ in FINETUNE_OPTIONS
        if flag not in SHARED_SWEEP_FLAGS and getattr(args, f"bert_{field}", None) is not None
    }
    if getattr(experiment, "kind", None) != "bert":
        if given:
            flags = ", ".join("--" + k.replace("_", "-") for k in given)
            raise ValueError(f"{flags} apply to BERT experiments only")
        return {}
    for flag in SHARED_SWEEP_FLAGS:
        field = flag.removeprefix("--")
        if getattr(args, field, None) is not None:
            given[field] = getattr(args, field)
    return given


def _threads(value: int | None) -> None:
    if value is None:
        return
    if value < 1:
        raise ValueError(f"--threads must be an integer >= 1, got {value}")
    import torch

    torch.set_num_threads(value)


def _train_bert(args: argparse.Namespace) -> int:
    import tempfile

    from imm_ray.console import quiet_transformers
    from imm_ray.supervised.bert.finetune import FinetuneConfig, finetune, prepare_run
    from imm_ray.supervised.lm.train import stderr_progress

    fields = {field: getattr(args, field) for _, field, _, _ in FINETUNE_OPTIONS}
    config = FinetuneConfig(
        **{k: v for k, v in fields.items() if v is not None},
        method=args.method,
        seed=args.seed,
        device=args.device,
    )
    _threads(args.threads)
    if config.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device is available")
    quiet_transformers()
    run = prepare_run(config)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="imm-ray-bert-") as scratch:
        results = finetune(run, args.output_dir or scratch, progress=stderr_progress)
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
    sys.stdout.flush()
    return 0


def _pretrain(args: argparse.Namespace) -> int:
    from imm_ray.console import quiet_transformers
    from imm_ray.supervised.bert.pretrain import PretrainConfig, pretrain
    from imm_ray.supervised.lm.corpus import load_corpus
    from imm_ray.supervised.lm.train import stderr_progress

    config = PretrainConfig(
        preset=args.preset,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        max_length=args.max_length,
        seed=args.seed,
        device=args.device,
        precision=args.precision,
    )
    _threads(args.threads)
    check_new_folder(args.out)
    load_corpus(args.data)  # checks the folder before anything is built
    quiet_transformers()
    results = pretrain(config, args.data, args.out, progress=stderr_progress)
    print(
        f"{args.out}: {config.preset} BERT, {int(results['parameters']):,} parameters, "
        f"{config.steps} steps of {config.batch_size} sentences in {results['seconds']:.0f} s; "
        f"MLM loss train {results['train_loss']:.3f}, valid {results['valid_loss']:.3f}"
    )
    return 0


def _make_acceptability(args: argparse.Namespace) -> int:
    from imm_ray.supervised.bert.acceptability import make_acceptability

    check_new_folder(args.out)
    summary = make_acceptability(
        args.corpus,
        args.out,
        seed=args.seed,
        min_words=args.min_words,
        max_words=args.max_words,
        max_examples=args.max_examples,
    )
    parts = ", ".join(
        f"{name} {count:,} ({summary.corruptions[name]['swap']:,} swaps, "
        f"{summary.corruptions[name]['replace']:,} replacements)"
        for name, count in summary.examples.items()
    )
    print(f"{args.out}: {parts}")
    return 0
