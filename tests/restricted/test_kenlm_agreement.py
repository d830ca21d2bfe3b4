"""The project's Kneser–Ney bigram against the real KenLM: ``lmplz -o 2`` estimates on the
same corpus, every ARPA entry is compared, and the ``kenlm`` module scores with both files."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from imm_ray.restricted.arpa import write_arpa
from imm_ray.restricted.kneser_ney import estimate_kneser_ney
from imm_ray.supervised.lm.corpus import load_corpus, read_sentences
from imm_ray.supervised.lm.synthetic import MarkovSource

TOLERANCE = 1e-4


def parse_arpa(path):
    """``{("w",) or ("x", "y"): (log10 p, log10 back-off)}``, read independently of the
    project's reader."""
    entries, order = {}, 0
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.endswith("-grams:"):
            order = int(line[1])
        elif line and order and not line.startswith("\\"):
            fields = line.split()
            words = tuple(fields[1 : 1 + order])
            backoff = float(fields[1 + order]) if len(fields) > 1 + order else 0.0
            entries[words] = (float(fields[0]), backoff)
    return entries


def run_lmplz(lmplz, train, arpa, fallback=False):
    command = [str(lmplz), "-o", "2", "-S", "64M", "-T", str(arpa.parent)]
    if fallback:
        command.append("--discount_fallback")
    with train.open() as stdin, arpa.open("w") as stdout:
        result = subprocess.run(
            command, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=120
        )
    assert result.returncode == 0, result.stderr
    return result.stderr


def ours(folder):
    corpus = load_corpus(folder)
    model = estimate_kneser_ney(corpus.train, len(corpus.vocab), corpus.vocab.eos_id)
    write_arpa(model, corpus.vocab.words, folder / "ours.arpa")
    return corpus, model


def assert_same_arpa(kenlm_arpa, our_arpa):
    theirs, mine = parse_arpa(kenlm_arpa), parse_arpa(our_arpa)
    assert set(theirs) == set(mine)
    assert sum(len(k) == 2 for k in theirs) > 0
    worst = max(max(abs(theirs[k][0] - mine[k][0]), abs(theirs[k][1] - mine[k][1])) for k in theirs)
    assert worst <= TOLERANCE, f"largest log10 difference {worst}"


@pytest.fixture(scope="module")
def zipf_corpus(tmp_path_factory):
    """150 symbols, Zipf-shaped: the count-of-counts of both levels have no gap."""
    folder = tmp_path_factory.mktemp("zipf")
    MarkovSource.random(150, seed=0, zipf=1.5).write_corpus(folder, (20_000, 3_000, 3_000), 1)
    return folder


def test_every_arpa_entry_matches_lmplz(lmplz, zipf_corpus):
    stderr = run_lmplz(lmplz, zipf_corpus / "train.txt", zipf_corpus / "lmplz.arpa")
    assert "Substituting" not in stderr
    _, model = ours(zipf_corpus)
    assert model.fallback == {"unigram": False, "bigram": False}
    assert_same_arpa(zipf_corpus / "lmplz.arpa", zipf_corpus / "ours.arpa")


def test_kenlm_scores_held_out_sentences_alike_with_either_file(lmplz, zipf_corpus):
    import kenlm

    if not (zipf_corpus / "lmplz.arpa").exists():
        run_lmplz(lmplz, zipf_corpus / "train.txt", zipf_corpus / "lmplz.arpa")
    corpus, model = ours(zipf_corpus)
    theirs = kenlm.Model(str(zipf_corpus / "lmplz.arpa"))
    mine = kenlm.Model(str(zipf_corpus / "ours.arpa"))
    sentences = [" ".join(s) for s in read_sentences(zipf_corpus / "test.txt")]
    sentences += ["w1 never-seen w2", "w3"]  # an OOV word is <unk> for both
    for sentence in sentences:
        assert mine.score(sentence) == pytest.approx(theirs.score(sentence), abs=TOLERANCE)
    # The project's own scorer is the same model: per-token log10 probabilities agree.
    ids = corpus.vocab.encode([sentences[0].split()])
    ours_log10 = model.stream_log_prob(ids).numpy() / np.log(10)
    full = list(theirs.full_scores(sentences[0]))
    assert ours_log10 == pytest.approx([score for score, _, _ in full], abs=TOLERANCE)


def test_fallback_discounts_match_lmplz_discount_fallback(lmplz, tmp_path):
    # 30 symbols: every word follows most others, so the unigram continuation counts leave
    # n1 … n3 empty and lmplz needs --discount_fallback.
    MarkovSource.random(30, seed=2).write_corpus(tmp_path, (20_000, 1_000, 1_000), 0)
    stderr = run_lmplz(lmplz, tmp_path / "train.txt", tmp_path / "lmplz.arpa", fallback=True)
    assert "Substituting fallback discounts for order 0" in stderr
    _, model = ours(tmp_path)
    assert model.fallback == {"unigram": True, "bigram": False}
    assert_same_arpa(tmp_path / "lmplz.arpa", tmp_path / "ours.arpa")


def test_tiny_hand_corpus_matches_lmplz(lmplz, tmp_path):
    text = "the cat sat\nthe dog sat on the mat\n\na cat\nthe mat the mat\n"
    for split in ("train", "valid", "test"):
        (tmp_path / f"{split}.txt").write_text(text)
    run_lmplz(lmplz, tmp_path / "train.txt", tmp_path / "lmplz.arpa", fallback=True)
    ours(tmp_path)
    assert_same_arpa(tmp_path / "lmplz.arpa", tmp_path / "ours.arpa")


def test_missing_lmplz_fails_under_ci(tmp_path):
    import os
    import sys

    # The inner run reads none of the caller's pytest settings: PYTEST_ADDOPTS="-q" (made
    # -qq) would drop the summary line read below, "-x" change it, PYTEST_PLUGINS load more.
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}
    env.update(CI="true", IMM_RAY_LMPLZ=str(tmp_path / "no-lmplz"))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k", "tiny"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout
    # pytest.fail in a fixture reports an error: the run fails, nothing is skipped.
    assert "1 error" in result.stdout and " skipped" not in result.stdout.splitlines()[-1]
    assert "lmplz not found" in result.stdout
