"""Kneser–Ney bigram estimation: the project's estimator against KenLM's ``lmplz -o 2``.

On one PTB-format folder (e.g. the Austen split made by ``imm-ray lm prepare``), in one run:

- time: best of ``--repeats`` for text → ARPA (both), and for the estimation alone (ours);
- peak memory: peak RSS of each process (``wait4``), and for ours the estimator's own
  allocations (tracemalloc) on growing prefixes of train, against its distinct bigrams;
- perplexity of both models on train, valid and test (lmplz's scored with the ``kenlm``
  module), and the largest log10 difference between the two ARPA files.

lmplz refuses a literal ``<unk>`` in its input, so it reads train with ``<unk>`` renamed to
``<unk-word>`` (valid and test likewise when scored) and adds its own zeroton ``<unk>``; for
the ARPA comparison ours is estimated with that extra, unseen word too.

    python benchmarks/kn_bigram.py /tmp/austen/ptb [--lmplz PATH] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

UNK_WORD = "<unk-word>"


def default_lmplz() -> Path:
    if "IMM_RAY_LMPLZ" in os.environ:
        return Path(os.environ["IMM_RAY_LMPLZ"])
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "imm-ray" / "kenlm" / "bin" / "lmplz"


def run_measured(command: list[str], stdin=None, stdout=None) -> tuple[float, int, str]:
    """``(wall seconds, peak RSS in bytes, stdout or "")`` of one child process. Its outputs
    are read after it exits, so they must be small (progress lines, a JSON summary)."""
    with tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        child = subprocess.Popen(command, stdin=stdin, stdout=stdout or out, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        out.seek(0)
        if child.returncode != 0:
            raise RuntimeError(f"{command[0]} failed ({child.returncode}): {err.read()[-2000:]}")
        return wall, usage.ru_maxrss * 1024, out.read().decode()


def ours(folder: Path, arpa: Path, repeats: int) -> dict:
    """Runs in a fresh process (``--ours``) so that its peak RSS is its own."""
    import resource
    import tracemalloc
    from collections import Counter

    import numpy as np

    from imm_ray.restricted.arpa import write_arpa
    from imm_ray.restricted.kneser_ney import estimate_kneser_ney
    from imm_ray.supervised.lm.corpus import EOS, Vocabulary, load_corpus, read_sentences

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    text_to_arpa, estimation = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        sentences = read_sentences(folder / "train.txt")
        counts = Counter(w for s in sentences for w in s)
        counts[EOS] = len(sentences)
        vocab = Vocabulary.from_counts(counts)
        ids = vocab.encode(sentences)
        middle = time.perf_counter()
        model = estimate_kneser_ney(ids, len(vocab), vocab.eos_id)
        estimated = time.perf_counter()
        write_arpa(model, vocab.words, arpa)
        text_to_arpa.append(time.perf_counter() - start)
        estimation.append(estimated - middle)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    scaling = []
    for fraction in (0.125, 0.25, 0.5, 1.0):
        prefix = ids[: int(len(ids) * fraction)]
        cut = prefix[: np.flatnonzero(prefix == vocab.eos_id)[-1] + 1]
        tracemalloc.start()
        part = estimate_kneser_ney(cut, len(vocab), vocab.eos_id)
        _, traced = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        stored = sum(
            t.element_size() * t.numel()
            for t in (part.unigram, part.backoff, part.indptr, part.targets, part.probs)
        )
        scaling.append(
            {"tokens": len(cut), "bigrams": part.num_bigrams, "traced": traced, "stored": stored}
        )

    corpus = load_corpus(folder)
    perplexity = {s: model.perplexity(corpus.split(s)) for s in ("train", "valid", "test")}
    return {
        "vocab": len(vocab),
        "tokens": {s: len(corpus.split(s)) for s in ("train", "valid", "test")},
        "bigrams": model.num_bigrams,
        "text_to_arpa": min(text_to_arpa),
        "estimation": min(estimation),
        "baseline_rss": baseline,
        "peak_rss": peak,
        "scaling": scaling,
        "perplexity": perplexity,
        "discounts": model.discounts,
        "fallback": model.fallback,
    }


def kenlm_perplexity(arpa: Path, files: dict[str, Path]) -> dict[str, float]:
    import kenlm

    model = kenlm.Model(str(arpa))
    out = {}
    for split, path in files.items():
        total, tokens = 0.0, 0
        for line in path.read_text().splitlines():
            total += model.score(line.replace("<unk>", UNK_WORD))
            tokens += len(line.split()) + 1
        out[split] = 10 ** (-total / tokens)
    return out


def arpa_difference(folder: Path, lmplz_arpa: Path, scratch: Path) -> float:
    """Largest |Δ log10| over every entry, ours estimated with lmplz's extra zeroton."""
    from imm_ray.restricted.arpa import write_arpa
    from imm_ray.restricted.kneser_ney import estimate_kneser_ney
    from imm_ray.supervised.lm.corpus import load_corpus

    corpus = load_corpus(folder)
    words = [UNK_WORD if w == "<unk>" else w for w in corpus.vocab.words] + ["<unk>"]
    model = estimate_kneser_ney(corpus.train, len(words), corpus.vocab.eos_id)
    write_arpa(model, words, scratch / "ours-zeroton.arpa")

    def entries(path: Path) -> dict:
        table, order = {}, 0
        for line in path.read_text().splitlines():
            if line.endswith("-grams:"):
                order = int(line[1])
            elif line.strip() and order and not line.startswith("\\"):
                f = line.split()
                back = float(f[1 + order]) if len(f) > 1 + order else 0.0
                table[tuple(f[1 : 1 + order])] = (float(f[0]), back)
        return table

    a, b = entries(lmplz_arpa), entries(scratch / "ours-zeroton.arpa")
    if set(a) != set(b):
        raise RuntimeError(f"the ARPA files hold different n-grams ({len(set(a) ^ set(b))})")
    return max(max(abs(a[k][0] - b[k][0]), abs(a[k][1] - b[k][1])) for k in a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a PTB-format folder")
    parser.add_argument("--lmplz", type=Path, default=default_lmplz())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ours", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ours is not None:
        print(json.dumps(ours(args.folder, args.ours, args.repeats)))
        return

    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        command = [sys.executable, __file__, str(args.folder), "--repeats", str(args.repeats)]
        _, _, report = run_measured([*command, "--ours", str(scratch / "ours.arpa")])
        mine = json.loads(report)

        train = scratch / "train.txt"
        train.write_text((args.folder / "train.txt").read_text().replace("<unk>", UNK_WORD))
        lmplz_runs = {}
        for label, extra in (("default", []), ("-S 256M", ["-S", "256M"])):
            times, peaks = [], []
            for _ in range(args.repeats):
                with train.open() as stdin, (scratch / "lmplz.arpa").open("w") as stdout:
                    seconds, peak, _ = run_measured(
                        [str(args.lmplz), "-o", "2", "-T", tmp, *extra], stdin, stdout
                    )
                times.append(seconds)
                peaks.append(peak)
            lmplz_runs[label] = (min(times), max(peaks))
        files = {s: args.folder / f"{s}.txt" for s in ("train", "valid", "test")}
        theirs = kenlm_perplexity(scratch / "lmplz.arpa", files)
        worst = arpa_difference(args.folder, scratch / "lmplz.arpa", scratch)

    mib = 2**20
    print(
        f"# {args.folder}: {platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}"
    )
    print(
        f"vocabulary {mine['vocab']:,}; tokens (with <eos>) "
        + ", ".join(f"{s} {n:,}" for s, n in mine["tokens"].items())
        + f"; distinct train bigrams {mine['bigrams']:,}"
    )
    print("\n| estimator | text → ARPA | estimation only | peak RSS |\n|---|---:|---:|---:|")
    print(
        f"| ours | {mine['text_to_arpa']:.3f} s | {mine['estimation']:.3f} s | "
        f"{mine['peak_rss'] / mib:.0f} MiB (after imports: {mine['baseline_rss'] / mib:.0f} MiB) |"
    )
    for label, (seconds, peak) in lmplz_runs.items():
        print(f"| lmplz -o 2 ({label}) | {seconds:.3f} s | – | {peak / mib:.0f} MiB |")
    print("\n| train tokens | distinct bigrams | estimator's allocations (peak) | stored model |")
    print("|---:|---:|---:|---:|")
    for row in mine["scaling"]:
        print(
            f"| {row['tokens']:,} | {row['bigrams']:,} | {row['traced'] / mib:.1f} MiB "
            f"({row['traced'] / row['bigrams']:.0f} B/bigram) | {row['stored'] / mib:.1f} MiB |"
        )
    dense = mine["vocab"] ** 2 * 8 / mib
    print(f"(a dense V×V float64 matrix: {dense:,.0f} MiB)")
    print("\n| perplexity | train | valid | test |\n|---|---:|---:|---:|")
    print("| ours | " + " | ".join(f"{mine['perplexity'][s]:.2f}" for s in files) + " |")
    print("| lmplz (kenlm) | " + " | ".join(f"{theirs[s]:.2f}" for s in files) + " |")
    print(f"\nlargest |Δ log10| over all ARPA entries (with lmplz's zeroton <unk>): {worst:.2e}")
    print(f"discounts: {mine['discounts']}; fallback: {mine['fallback']}")


if __name__ == "__main__":
    main()
