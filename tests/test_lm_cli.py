"""``imm-ray lm prepare`` and ``imm-ray lm bigram`` as a user runs them, and their bad input."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from imm_ray.cli import main
from imm_ray.supervised.lm.synthetic import MarkovSource


def imm_ray(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "imm_ray.cli", *args], capture_output=True, text=True, timeout=120
    )


def perplexities(stdout: str) -> dict[str, float]:
    return {
        m[1]: float(m[2]) for m in re.finditer(r"^(train|valid|test) .* ([\d.]+)$", stdout, re.M)
    }


def raw_prose(path, seed, sentences=400):
    """English-looking raw text: capitalized sentences of a synthetic source's words."""
    source = MarkovSource.random(40, seed=seed)
    ids = source.sample(sentences * 12, seed=seed)
    names = ["."] + [f"{chr(97 + i // 26)}{chr(97 + i % 26)}x" for i in range(39)]
    text = " ".join(names[i] for i in ids)
    path.write_text(text.replace(" .", ".") + "\n")
    return path


def test_prepare_then_bigram_end_to_end(tmp_path):
    raw = [raw_prose(tmp_path / f"{i}.txt", seed=i) for i in range(3)]
    out = tmp_path / "ptb"
    result = imm_ray(
        "lm",
        "prepare",
        str(raw[0]),
        "--out",
        str(out),
        "--vocab",
        "30",
        "--valid",
        str(raw[1]),
        "--test",
        str(raw[2]),
    )
    assert result.returncode == 0, result.stderr
    assert "vocabulary 30" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["test.txt", "train.txt", "valid.txt"]

    arpa = tmp_path / "kn.arpa"
    estimated = imm_ray("lm", "bigram", str(out), "--arpa", str(arpa))
    assert estimated.returncode == 0, estimated.stderr
    assert arpa.read_text().startswith("\\data\\")
    ours = perplexities(estimated.stdout)
    assert set(ours) == {"train", "valid", "test"}
    assert 1 < ours["train"] < ours["valid"] < 30

    scored = imm_ray("lm", "bigram", str(out), "--read-arpa", str(arpa))
    assert scored.returncode == 0, scored.stderr
    assert perplexities(scored.stdout) == pytest.approx(ours, rel=1e-4)


def run_main(capsys, *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    return exit_info.value.code, captured.err


@pytest.fixture
def corpus(tmp_path):
    folder = tmp_path / "corpus"
    MarkovSource.random(20, seed=0).write_corpus(folder, (2_000, 300, 300), seed=0)
    return folder


def test_fallback_discounts_are_reported(corpus, capsys):
    assert main(["lm", "bigram", str(corpus)]) == 0
    err = capsys.readouterr().err
    assert "the unigram count-of-counts have a gap" in err
    assert "--discount_fallback D1=0.5 D2=1.0 D3+=1.5" in err


@pytest.mark.parametrize(
    ("split", "text", "message"),
    [
        ("train", "", "train.txt is empty"),
        ("valid", "\n", "valid.txt is empty"),
        ("test", None, "test.txt does not exist"),
    ],
)
def test_bigram_refuses_bad_corpora_and_writes_nothing(corpus, capsys, split, text, message):
    target = corpus / f"{split}.txt"
    if text is None:
        target.unlink()
    else:
        target.write_text(text)
    arpa = corpus / "out.arpa"
    code, err = run_main(capsys, "lm", "bigram", str(corpus), "--arpa", str(arpa))
    assert code == 2
    assert f"imm-ray: error: corpus file {target}" in err and message in err
    assert not arpa.exists()


def test_bigram_names_the_line_of_a_malformed_arpa(corpus, capsys, tmp_path):
    arpa = tmp_path / "kn.arpa"
    assert main(["lm", "bigram", str(corpus), "--arpa", str(arpa)]) == 0
    lines = arpa.read_text().splitlines()
    lines[6] = "-0.5\tw1\tbroken"
    arpa.write_text("\n".join(lines))
    code, err = run_main(capsys, "lm", "bigram", str(corpus), "--read-arpa", str(arpa))
    assert code == 2
    assert f"imm-ray: error: {arpa}:7: back-off must be a number" in err


def test_bigram_refuses_an_arpa_of_another_vocabulary(corpus, capsys, tmp_path):
    other = tmp_path / "other"
    MarkovSource.random(25, seed=1).write_corpus(other, (2_000, 300, 300), seed=0)
    arpa = tmp_path / "other.arpa"
    assert main(["lm", "bigram", str(other), "--arpa", str(arpa)]) == 0
    capsys.readouterr()
    code, err = run_main(capsys, "lm", "bigram", str(corpus), "--read-arpa", str(arpa))
    assert code == 2
    assert "imm-ray: error: vocabulary mismatch between the corpus (21 words)" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--vocab", "1"], "--vocab must be an integer >= 2"),
        (["--vocab", "ten"], "--vocab must be an integer >= 2"),
        (["--fractions", "0.5", "0.6", "-0.1"], "fractions must be three numbers in (0, 1)"),
        (["MISSING"], "raw file MISSING does not exist"),
    ],
)
def test_prepare_refuses_bad_input_and_writes_nothing(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "book.txt").write_text("One sentence. Another one.\n")
    code, err = run_main(capsys, "lm", "prepare", "book.txt", *args, "--out", "out")
    assert code == 2
    assert message in err
    assert not (tmp_path / "out").exists()


def test_prepare_refuses_an_empty_corpus(tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("\n\n")
    code, err = run_main(
        capsys, "lm", "prepare", str(tmp_path / "empty.txt"), "--out", str(tmp_path / "out")
    )
    assert code == 2
    assert "imm-ray: error: the train split is empty" in err
    assert not (tmp_path / "out").exists()


#: Every command that writes a folder (--out), with the rest of its arguments (the inputs
#: need not exist: the folder is checked first).
FOLDER_WRITERS = {
    "lm prepare": lambda tmp: (
        ("lm", "prepare", str(tmp / "book.txt")) + ("--fractions", "0.34", "0.33", "0.33")
    ),
    "lm make-acceptability": lambda tmp: ("lm", "make-acceptability", str(tmp)),
    "train bert-pretrain": lambda tmp: ("train", "bert-pretrain", "--data", str(tmp)),
}


@pytest.mark.parametrize(
    ("command", "holds"),
    [
        *((command, holds) for command in FOLDER_WRITERS for holds in ("a corpus", "a file")),
        *((command, "is a file") for command in FOLDER_WRITERS),
        # The runs themselves are tested with each command; prepare's is quick.
        ("lm prepare", "nothing"),
        ("lm prepare", "an empty folder"),
    ],
)
def test_folder_writers_write_only_a_new_or_empty_out_folder(tmp_path, capsys, command, holds):
    (tmp_path / "book.txt").write_text("One sentence. Another one. And a third one.\n")
    out = tmp_path / "out"
    before = {}
    if holds != "nothing":
        if holds == "is a file":
            out.write_text("notes\n")
            before[out] = out.read_bytes()
        else:
            out.mkdir()
        if holds == "a corpus":
            for split in ("train", "valid", "test"):
                (out / f"{split}.txt").write_text(f"an earlier {split} split\n")
        elif holds == "a file":
            (out / "notes.md").write_text("kept\n")
        before.update({path: path.read_bytes() for path in out.glob("*")})
    args = (*FOLDER_WRITERS[command](tmp_path), "--out", str(out))
    if holds in ("nothing", "an empty folder"):
        assert main(list(args)) == 0
        assert sorted(p.name for p in out.iterdir()) == ["test.txt", "train.txt", "valid.txt"]
        return
    code, err = run_main(capsys, *args)
    assert code == 2
    if holds == "is a file":
        assert err.startswith(f"imm-ray: error: --out: {out} is a file; give a folder")
    else:
        assert err.startswith(f"imm-ray: error: --out: {out} is not empty")
    after = {out: out.read_bytes()} if out.is_file() else {p: p.read_bytes() for p in out.glob("*")}
    assert after == before, "something written earlier was changed"


def test_bigram_names_a_missing_folder(tmp_path, capsys):
    code, err = run_main(capsys, "lm", "bigram", str(tmp_path / "nowhere"))
    assert code == 2
    assert "corpus folder" in err and "does not exist" in err


def test_bigram_names_a_missing_arpa_file(corpus, capsys, tmp_path):
    missing = tmp_path / "none.arpa"
    code, err = run_main(capsys, "lm", "bigram", str(corpus), "--read-arpa", str(missing))
    assert code == 2
    assert f"imm-ray: error: ARPA file {missing} does not exist" in err
