"""``imm-ray train lm`` as a user runs it, and its bad input (exit 2, no traceback)."""

from __future__ import annotations

import re

import pytest

from imm_ray.cli import main
from imm_ray.restricted.arpa import write_arpa
from imm_ray.restricted.kneser_ney import estimate_kneser_ney
from imm_ray.supervised.lm.corpus import load_corpus
from imm_ray.supervised.lm.synthetic import MarkovSource


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("markov")
    MarkovSource.random(6, seed=3).write_corpus(folder, (1500, 300, 300), seed=3)
    return folder


def run(capsys, *args):
    try:
        code = main(list(args))
    except SystemExit as exit:
        code = exit.code
    out = capsys.readouterr()
    return code, out.out, out.err


def train_tiny(capsys, data, checkpoints, *args):
    """``imm-ray train lm`` of the tiny preset on ``data``, checkpointing to ``checkpoints``."""
    return run(
        capsys,
        "train",
        "lm",
        "--data",
        str(data),
        "--preset",
        "tiny",
        "--checkpoint-dir",
        str(checkpoints),
        *args,
    )


def test_train_lm_prints_perplexities_saves_and_resumes(data, tmp_path, capsys):
    folder = tmp_path / "ck"
    common = ("--threads", "1", "--max-batches", "10")
    code, out, err = train_tiny(capsys, data, folder, *common)
    assert code == 0, err
    assert re.search(r"valid perplexity [\d.]+, test perplexity [\d.]+", out)
    rows = re.findall(r"^(train|valid|test) +([\d.]+) +([\d.]+)$", out, re.M)
    assert [r[0] for r in rows] == ["train", "valid", "test"]
    assert "epoch 1/1" in err  # progress on stderr
    assert (folder / "checkpoint.pt").is_file()

    code, _, err = train_tiny(capsys, data, folder, *common)
    assert code == 2 and "already holds a checkpoint; pass --resume" in err
    code, out, err = train_tiny(capsys, data, folder, *common, "--epochs", "2", "--resume")
    assert code == 0, err
    assert "2 epochs" in out and "epoch 2/2" in err and "epoch 1/2" not in err

    # Fewer epochs than the checkpoint has trained would train none: refused, not ignored.
    kept = (folder / "checkpoint.pt").read_bytes()
    code, out, err = train_tiny(capsys, data, folder, *common, "--epochs", "1", "--resume")
    assert code == 2 and out == ""
    assert err.strip().endswith(
        "imm-ray: error: epochs must be at least the 2 the checkpoint has trained to continue "
        "it, got 1"
    )
    assert (folder / "checkpoint.pt").read_bytes() == kept


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--k", "0"], "k must be an integer >= 1, got 0"),
        (["--every", "0"], "every must be an integer >= 1, got 0"),
        (["--lam", "-1"], "lam must be a finite number >= 0, got -1.0"),
        (["--unroll", "1"], "unroll must be an integer >= 2, got 1"),
        (["--threads", "0"], "--threads must be an integer >= 1, got '0'"),
        (["--resume"], "--resume: no checkpoint at"),
    ],
)
def test_bad_options_exit_2_naming_the_field(data, tmp_path, capsys, args, message):
    code, _, err = train_tiny(capsys, data, tmp_path / "ck", *args)
    assert code == 2
    assert err.startswith("imm-ray: error: ") and message in err
    assert "Traceback" not in err
    assert not (tmp_path / "ck").exists()


def test_a_folder_without_train_txt_and_a_foreign_bigram_are_refused(data, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = train_tiny(capsys, empty, tmp_path / "ck")
    assert code == 2 and "train.txt does not exist" in err

    other = tmp_path / "other"
    MarkovSource.random(9, seed=4).write_corpus(other, (800, 200, 200), seed=4)
    corpus = load_corpus(other)
    arpa = tmp_path / "other.arpa"
    write_arpa(
        estimate_kneser_ney(corpus.train, len(corpus.vocab), corpus.vocab.eos_id),
        corpus.vocab.words,
        arpa,
    )
    code, _, err = train_tiny(capsys, data, tmp_path / "ck", "--arpa", str(arpa))
    assert code == 2 and "vocabulary mismatch between the corpus" in err
    assert not (tmp_path / "ck").exists()


def test_sweep_lm_options_are_checked_before_ray_starts(data, tmp_path, capsys):
    code, _, err = run(capsys, "sweep", "table1", "--storage", str(tmp_path))
    assert code == 2 and "table1 needs a PTB-format data folder: pass --data DIR" in err
    code, _, err = run(
        capsys, "sweep", "table1", "--data", str(tmp_path / "nope"), "--storage", str(tmp_path)
    )
    assert code == 2 and "does not exist" in err
    code, _, err = run(capsys, "sweep", "figure1", "--data", str(data), "--storage", str(tmp_path))
    kinds = "LSTM language-model, causal-LM and BERT experiments only"
    assert code == 2 and f"--data apply to {kinds}" in err
    code, _, err = run(
        capsys, "sweep", "table1", "--data", str(data), "--epochs", "0", "--storage", str(tmp_path)
    )
    assert code == 2 and "epochs must be an integer >= 1, got 0" in err
    assert not any(tmp_path.iterdir())


#: Each kind-specific option of ``sweep`` (with a value it accepts) and the kinds of
#: experiment that take it, by the names the refusal gives them.
KIND_OPTIONS = {
    ("--data", "DIR"): ("LSTM language-model", "causal-LM", "BERT"),
    ("--epochs", "2"): ("LSTM language-model", "causal-LM", "BERT"),
    ("--precision", "fp32"): ("LSTM language-model", "causal-LM", "BERT"),
    ("--preset", "tiny"): ("LSTM language-model", "causal-LM"),
    ("--max-batches", "5"): ("LSTM language-model",),
    ("--imm-start-ppl", "100"): ("LSTM language-model",),
    ("--task", "cola"): ("BERT",),
    ("--model", "tiny"): ("BERT",),
    ("--corpus", "DIR"): ("BERT",),
    ("--lam", "0.5"): ("BERT",),
    ("--k", "3"): ("BERT",),
    ("--max-length", "32"): ("BERT",),
}
#: A named experiment of each kind, by the name refusals give its kind (RL and logistic
#: experiments take none of the options).
KIND_EXPERIMENTS = {
    "RL": "figure2",
    "logistic": "figure1",
    "LSTM language-model": "table1",
    "causal-LM": "causal-lm",
    "BERT": "table2",
}


@pytest.mark.parametrize("option", list(KIND_OPTIONS), ids=lambda option: option[0])
def test_sweep_refuses_a_kinds_option_for_every_other_kind_naming_those_that_take_it(
    option, tmp_path, capsys
):
    takers = KIND_OPTIONS[option]
    named = ", ".join(takers[:-1]) + f" and {takers[-1]}" if len(takers) > 1 else takers[0]
    for kind, experiment in KIND_EXPERIMENTS.items():
        if kind in takers:
            continue
        code, _, err = run(capsys, "sweep", experiment, *option, "--storage", str(tmp_path))
        assert code == 2, (kind, option, err)
        assert f"{option[0]} apply to {named} experiments only" in err, (kind, err)
        assert "Traceback" not in err
    assert not any(tmp_path.iterdir())
