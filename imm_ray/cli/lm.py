"""``imm-ray lm``: PTB-format corpora and their Kneser–Ney bigram (the restricted model P̂).

``imm-ray lm prepare RAW… --out DIR`` turns raw English text into a PTB-format folder;
``imm-ray lm bigram DIR`` estimates the modified Kneser–Ney bigram of ``DIR/train.txt``
(as ``lmplz -o 2`` does), prints train, valid and test perplexity, and writes or reads ARPA;
``imm-ray lm make-acceptability DIR --out TASK`` builds a CoLA-format task from a corpus
(paper Sec. 7.2, Table 2) for ``train bert``.

Every input is checked before anything is written: a bad one exits with status 2 and
``imm-ray: error: …``, and leaves no partial output.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from imm_ray.cli.base import add_command, from_options
from imm_ray.cli.options import corpus_argument, fraction, new_file, out_folder, vocab_size


def add_lm_commands(commands) -> None:
    """Adds ``lm`` and its commands to the ``imm-ray`` subparsers."""
    lm = commands.add_parser("lm", help="language-model data and the Kneser–Ney bigram")
    kinds = lm.add_subparsers(dest="lm_command", required=True, metavar="COMMAND")

    prepare = add_command(
        kinds,
        "prepare",
        _prepare,
        help="turn raw English text into a PTB-format folder (train/valid/test.txt)",
        parents=[out_folder("corpus")],
    )
    # Each option is stored as the parameter of supervised.lm.corpus.prepare it gives.
    prepare.add_argument("raw_files", nargs="+", type=Path, metavar="RAW", help="raw text files")
    prepare.add_argument(
        "--vocab",
        dest="vocab_size",
        metavar="VOCAB",
        type=vocab_size,
        default=10000,
        help="vocabulary size, <eos> and <unk> included",
    )
    for split, name in (("valid", "validation"), ("test", "test")):
        prepare.add_argument(
            f"--{split}",
            dest=f"{split}_files",
            metavar=split.upper(),
            nargs="+",
            type=Path,
            default=[],
            help=f"raw files of the {name} split",
        )
    prepare.add_argument(
        "--fractions",
        nargs=3,
        type=fraction,
        metavar=("TRAIN", "VALID", "TEST"),
        help="split the RAW files' sentences in order by these fractions (default without "
        "--valid/--test: 0.8 0.1 0.1)",
    )

    bigram = add_command(
        kinds,
        "bigram",
        _bigram,
        help="estimate the Kneser–Ney bigram of DIR/train.txt and print perplexities",
        parents=[corpus_argument()],
    )
    bigram.add_argument(
        "--arpa", type=new_file("--arpa"), help="also write the model as an ARPA file: a new one"
    )
    bigram.add_argument(
        "--read-arpa",
        type=Path,
        metavar="ARPA",
        help="score this bigram ARPA file (e.g. lmplz's) instead of estimating; its "
        "vocabulary must be DIR's",
    )

    make = add_command(
        kinds,
        "make-acceptability",
        _make_acceptability,
        help="build a CoLA-format acceptability task from a PTB-format corpus",
        parents=[corpus_argument(), out_folder("task")],
    )
    make.add_argument("--seed", type=int, default=0, help="random seed of the corruptions")
    make.add_argument("--min-words", type=int, default=4, help="shortest sentence used")
    make.add_argument("--max-words", type=int, default=30, help="longest sentence used")
    make.add_argument("--max-examples", type=int, help="cap on each split's examples")


def _prepare(args: argparse.Namespace) -> int:
    """Tokenize raw English text PTB-style (lower case, clitics split, punctuation dropped,
    numbers as N, one sentence per line), keep the --vocab most frequent training words and
    write the rest as <unk>. Split by file (RAW files are train; --valid and --test name the
    others) or by --fractions of the sentences in order."""
    from imm_ray.supervised.lm.corpus import prepare

    start = time.perf_counter()
    summary = from_options(prepare, args)
    counts = ", ".join(
        f"{split} {summary.tokens[split]:,} tokens ({summary.unk[split]:,} <unk>)"
        for split in summary.files
    )
    print(
        f"{args.out}: vocabulary {summary.vocab_size:,}; {counts}; "
        f"{time.perf_counter() - start:.1f} s"
    )
    return 0


def _bigram(args: argparse.Namespace) -> int:
    """Estimate the interpolated modified Kneser–Ney bigram of DIR/train.txt as KenLM's
    `lmplz -o 2` does, and print its train, valid and test perplexity (every <eos> counted,
    as KenLM counts </s>)."""
    from imm_ray.restricted.arpa import read_arpa, write_arpa
    from imm_ray.restricted.kneser_ney import FALLBACK_DISCOUNTS, estimate_kneser_ney
    from imm_ray.supervised.lm.corpus import SPLITS, load_corpus

    corpus = load_corpus(args.corpus)
    words = corpus.vocab.words
    start = time.perf_counter()
    if args.read_arpa is None:
        model = estimate_kneser_ney(corpus.train, len(words), corpus.vocab.eos_id)
        source = "modified Kneser–Ney bigram of train"
    else:
        model, _ = read_arpa(args.read_arpa, words)
        source = f"bigram of {args.read_arpa}"
    seconds = time.perf_counter() - start
    perplexities = {split: model.perplexity(corpus.split(split)) for split in SPLITS}
    if args.arpa is not None:
        write_arpa(model, words, args.arpa)

    for level, fell_back in model.fallback.items():
        if fell_back:
            d1, d2, d3 = FALLBACK_DISCOUNTS
            print(
                f"imm-ray: warning: the {level} count-of-counts have a gap or give a discount "
                f"out of range; using lmplz's --discount_fallback D1={d1} D2={d2} D3+={d3}",
                file=sys.stderr,
            )
    print(
        f"{args.corpus}: vocabulary {len(words):,}, {model.num_bigrams:,} distinct bigrams; "
        f"{source} in {seconds:.2f} s"
    )
    for level, (d1, d2, d3) in model.discounts.items():
        print(f"  {level} discounts: D1={d1:.4f} D2={d2:.4f} D3+={d3:.4f}")
    print(f"{'split':<6} {'tokens':>10} {'<unk>':>8} {'OOV':>6} {'perplexity':>11}")
    for split in SPLITS:
        ids = corpus.split(split)
        unk = int((ids == corpus.vocab.unk_id).sum())
        print(
            f"{split:<6} {len(ids):>10,} {unk:>8,} {corpus.oov[split]:>6,} "
            f"{perplexities[split]:>11.2f}"
        )
    if args.arpa is not None:
        print(f"ARPA: {args.arpa}")
    return 0


def _make_acceptability(args: argparse.Namespace) -> int:
    """Write train.tsv, dev.tsv and test.tsv (CoLA's layout) from DIR's train, valid and test
    splits: label 1 an original sentence, label 0 the sentence with two adjacent words
    swapped or one word replaced by a vocabulary word; balanced classes."""
    from imm_ray.supervised.bert.acceptability import make_acceptability

    summary = from_options(make_acceptability, args)
    parts = ", ".join(
        f"{name} {count:,} ({summary.corruptions[name]['swap']:,} swaps, "
        f"{summary.corruptions[name]['replace']:,} replacements)"
        for name, count in summary.examples.items()
    )
    print(f"{args.out}: {parts}")
    return 0
