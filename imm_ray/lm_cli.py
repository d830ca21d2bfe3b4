"""``imm-ray lm``: PTB-format corpora and their Kneser–Ney bigram (the restricted model P̂).

``imm-ray lm prepare RAW… --out DIR`` turns raw English text into a PTB-format folder;
``imm-ray lm bigram DIR`` estimates the modified Kneser–Ney bigram of ``DIR/train.txt``
(as ``lmplz -o 2`` does), prints train, valid and test perplexity, and writes or reads ARPA.

Every input is checked before anything is written: a bad one exits with status 2 and
``imm-ray: error: …``, and leaves no partial output.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def _vocab_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 2:
        raise argparse.ArgumentTypeError(
            f"--vocab must be an integer >= 2 (it counts <eos> and <unk>), got {text!r}"
        )
    return value


def _fraction(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--fractions must be numbers, got {text!r}") from None


def add_lm_commands(commands, usage_error: type[Exception]):
    """Add ``lm prepare`` and ``lm bigram`` to the ``imm-ray`` subparsers; handlers report
    bad input by raising ``usage_error``. Returns the ``lm`` subparsers, for more commands."""
    lm = commands.add_parser("lm", help="language-model data and the Kneser–Ney bigram")
    kinds = lm.add_subparsers(dest="lm_command", required=True, metavar="COMMAND")

    prepare = kinds.add_parser(
        "prepare",
        help="turn raw English text into a PTB-format folder (train/valid/test.txt)",
        description=(
            "Tokenize raw English text PTB-style (lower case, clitics split, punctuation "
            "dropped, numbers as N, one sentence per line), keep the --vocab most frequent "
            "training words and write the rest as <unk>. Split by file (RAW files are train; "
            "--valid and --test name the others) or by --fractions of the sentences in order."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    prepare.add_argument("raw", nargs="+", type=Path, metavar="RAW", help="raw text files")
    prepare.add_argument(
        "--out", type=Path, required=True, help="output folder: new, or empty (never overwritten)"
    )
    prepare.add_argument(
        "--vocab",
        type=_vocab_size,
        default=10000,
        help="vocabulary size, <eos> and <unk> included",
    )
    prepare.add_argument(
        "--valid", nargs="+", type=Path, default=[], help="raw files of the validation split"
    )
    prepare.add_argument("--test", nargs="+", type=Path, default=[], help="raw files of the test")
    prepare.add_argument(
        "--fractions",
        nargs=3,
        type=_fraction,
        default=None,
        metavar=("TRAIN", "VALID", "TEST"),
        help="split the RAW files' sentences in order by these fractions [default without "
        "--valid/--test: 0.8 0.1 0.1]",
    )
    prepare.set_defaults(handler=guarded(_prepare, usage_error))

    bigram = kinds.add_parser(
        "bigram",
        help="estimate the Kneser–Ney bigram of DIR/train.txt and print perplexities",
        description=(
            "Estimate the interpolated modified Kneser–Ney bigram of DIR/train.txt as KenLM's "
            "`lmplz -o 2` does, and print its train, valid and test perplexity (every <eos> "
            "counted, as KenLM counts </s>)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    bigram.add_argument("corpus", type=Path, metavar="DIR", help="a PTB-format folder")
    bigram.add_argument(
        "--arpa", type=Path, default=None, help="also write the model as an ARPA file"
    )
    bigram.add_argument(
        "--read-arpa",
        type=Path,
        default=None,
        metavar="ARPA",
        help="score this bigram ARPA file (e.g. lmplz's) instead of estimating; its "
        "vocabulary must be DIR's",
    )
    bigram.set_defaults(handler=guarded(_bigram, usage_error))
    return kinds


def guarded(handler, usage_error):
    """``handler`` with its ``ValueError`` turned into the CLI's ``usage_error`` (exit 2)."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except ValueError as err:
            raise usage_error(str(err)) from None

    return run


def check_new_folder(path: Path, option: str = "--out") -> None:
    """A command that writes a folder never overwrites: ``path`` must be new or an empty
    folder, else :class:`ValueError` naming ``option`` (what is there is kept)."""
    if path.exists() and not path.is_dir():
        raise ValueError(f"{option}: {path} is a file; give a folder")
    if path.is_dir() and any(path.iterdir()):
        raise ValueError(
            f"{option}: {path} is not empty; choose another {option}, or an empty folder, so "
            "that nothing in it is overwritten"
        )


def _prepare(args: argparse.Namespace) -> int:
    from imm_ray.supervised.lm.corpus import prepare

    check_new_folder(args.out)
    start = time.perf_counter()
    summary = prepare(
        args.raw,
        args.out,
        vocab_size=args.vocab,
        valid_files=args.valid,
        test_files=args.test,
        fractions=args.fractions,
    )
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
