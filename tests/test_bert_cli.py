"""``imm-ray train bert-pretrain``, ``imm-ray lm make-acceptability`` and ``imm-ray train bert``
as a user runs them, and their bad input: exit 2, one line naming the field, before any work."""

from __future__ import annotations

import re

import pytest
from tiny_bert import TINY_BERT_TRAINING, markov_corpus
from transformers import BertForSequenceClassification

from imm_ray.cli import main
from imm_ray.restricted.kneser_ney import estimate_kneser_ney
from imm_ray.supervised.bert.finetune import write_bigram
from imm_ray.supervised.bert.model import preset_config
from imm_ray.supervised.bert.tokenizer import build_word_tokenizer


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return markov_corpus(tmp_path_factory.mktemp("cli-corpus"), 30, 7, (3000, 600, 600))


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, corpus):
    out = tmp_path_factory.mktemp("cli-model") / "model"
    code = main(
        [
            "train",
            "bert-pretrain",
            "--data",
            str(corpus),
            "--out",
            str(out),
            "--preset",
            "tiny",
            "--steps",
            "4",
            "--batch-size",
            "8",
            "--max-length",
            "32",
        ]
    )
    assert code == 0
    return out


@pytest.fixture(scope="module")
def task(tmp_path_factory, corpus):
    out = tmp_path_factory.mktemp("cli-task") / "acceptability"
    code = main(
        ["lm", "make-acceptability", str(corpus), "--out", str(out), "--max-examples", "24"]
    )
    assert code == 0
    return out


def test_pretrain_writes_model_tokenizer_and_bigram(pretrained, capsys):
    names = {p.name for p in pretrained.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "bigram.arpa"} <= names


def test_train_bert_with_imm_end_to_end(pretrained, task, corpus, capsys):
    capsys.readouterr()
    bigram = str(pretrained / "bigram.arpa")
    extra = ("--bigram", bigram, "--method", "imm", "--epochs", "1", *TINY_BERT_TRAINING)
    code = main(_bert(task, pretrained, corpus, *extra))
    out, err = capsys.readouterr()
    assert code == 0
    assert re.search(r"^dev mcc -?[\d.]+, test mcc -?[\d.]+$", out, re.M), out
    assert "acceptability: imm" in out
    assert "ETA" in err and "Traceback" not in err
    assert "{'loss'" not in out + err, "Trainer's log dicts are not printed"


def _fails(args, capsys, message):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert re.search(message, err), err
    assert "Traceback" not in err and "step " not in err


def _bert(task, model, corpus, *extra):
    return [
        "train",
        "bert",
        "--task",
        "acceptability",
        "--data",
        str(task),
        "--model",
        str(model),
        "--corpus",
        str(corpus),
        *extra,
    ]


def test_bad_input_exits_2_naming_the_field(pretrained, task, corpus, tmp_path, capsys):
    args = _bert(task, pretrained, corpus)
    _fails([*args[:3], "sst2", *args[4:]], capsys, r"error: task must be one of cola, mrpc")
    empty = tmp_path / "empty"
    empty.mkdir()
    _fails(_bert(empty, pretrained, corpus), capsys, r"task acceptability: .*has no train\.tsv")
    _fails(
        [*args[:3], "mrpc", *args[4:]], capsys, r"task mrpc: .*train\.tsv has no column '#1 String'"
    )
    _fails([*args, "--lam", "-1"], capsys, r"error: lam must be a finite number >= 0, got -1\.0")
    _fails([*args, "--k", "0"], capsys, r"error: k must be an integer >= 1, got 0")
    _fails(
        _bert(task, pretrained, tmp_path / "nowhere"),
        capsys,
        r"error: corpus folder .*nowhere does not exist",
    )


def test_a_model_without_mlm_head_exits_2(pretrained, task, corpus, tmp_path, capsys):
    tokenizer = build_word_tokenizer(["<eos>", "<unk>", "w1", "w2"])
    classifier = tmp_path / "classifier"
    BertForSequenceClassification(preset_config("tiny", len(tokenizer))).save_pretrained(classifier)
    tokenizer.save_pretrained(classifier)
    _fails(_bert(task, classifier, corpus), capsys, r"error: model .*classifier has no MLM head")


def test_a_bigram_over_another_vocabulary_exits_2(pretrained, task, corpus, tmp_path, capsys):
    tokenizer = build_word_tokenizer(["<eos>", "<unk>", "w1", "w2"])
    ids = [5, 6, 3, 6, 5, 3]
    other = estimate_kneser_ney(ids, len(tokenizer), tokenizer.sep_token_id)
    write_bigram(tokenizer, other, tmp_path / "other.arpa")
    _fails(
        [*_bert(task, pretrained, corpus), "--bigram", str(tmp_path / "other.arpa")],
        capsys,
        r"error: the bigram's vocabulary differs from the tokenizer's",
    )


def test_make_acceptability_and_pretrain_refuse_bad_input(tmp_path, pretrained, corpus, capsys):
    _fails(
        ["lm", "make-acceptability", str(tmp_path / "none"), "--out", str(tmp_path / "o")],
        capsys,
        r"error: corpus folder .*none does not exist",
    )
    _fails(
        ["train", "bert-pretrain", "--data", str(corpus), "--out", str(pretrained)],
        capsys,
        r"--out: .*model is not empty",
    )
    _fails(
        [
            "train",
            "bert-pretrain",
            "--data",
            str(corpus),
            "--out",
            str(tmp_path / "m"),
            "--steps",
            "0",
        ],
        capsys,
        r"error: steps must be an integer >= 1, got 0",
    )
