"""``imm-ray train causal-lm`` as a user runs it: a tiny GPT-2 from a preset, a tiny Llama
saved with ``save_pretrained`` and fine-tuned with ``--model``, a trained model reloaded,
``--resume``, and bad input (exit 2, no traceback)."""

from __future__ import annotations

import json
import re

import pytest
import torch
from test_lm_train_cli import run
from transformers import BertConfig, BertForMaskedLM, LlamaConfig, LlamaForCausalLM

from imm_ray.supervised.hf_lm.train import VOCAB_FILE, latest_checkpoint
from imm_ray.supervised.lm.corpus import load_corpus
from imm_ray.supervised.lm.synthetic import MarkovSource


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("markov")
    MarkovSource.random(8, seed=3).write_corpus(folder, (3000, 400, 400), seed=3)
    return folder


def train(capsys, data, output, *args):
    return run(
        capsys,
        "train",
        "causal-lm",
        "--data",
        str(data),
        "--output-dir",
        str(output),
        "--threads",
        "1",
        *args,
    )


def save_tiny_llama(folder, vocab_size: int, layers: int = 1, **config) -> None:
    """A Llama of 16 wide and ``layers`` layers over ``vocab_size`` ids, seeded with 0,
    saved with ``save_pretrained`` in ``folder``."""
    torch.manual_seed(0)
    LlamaForCausalLM(
        LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=layers,
            num_attention_heads=2,
            num_key_value_heads=2,
            **config,
        )
    ).save_pretrained(folder)


def perplexities(out: str) -> tuple[float, float]:
    found = re.search(r"valid perplexity ([\d.]+), test perplexity ([\d.]+)", out)
    assert found, out
    return float(found.group(1)), float(found.group(2))


def test_a_tiny_gpt2_trains_from_a_preset_and_fine_tunes_reloaded(data, tmp_path, capsys):
    code, out, err = train(capsys, data, tmp_path / "a", "--preset", "tiny", "--k", "2")
    assert code == 0, err
    assert "GPT2LMHeadModel (preset tiny), imm, seed 0" in out
    valid, test = perplexities(out)
    assert 1 < valid < 8 and 1 < test < 8  # 8 words: uniform is 8
    for split in ("train", "valid", "test"):
        assert re.search(rf"^{split}\s+[\d.]+\s+[\d.]+$", out, re.M), out
    saved = tmp_path / "a" / "model"
    assert (saved / "config.json").is_file()
    words = (saved / VOCAB_FILE).read_text().splitlines()
    assert words == list(load_corpus(data).vocab.words)
    assert "Traceback" not in err and "Writing model shards" not in err
    # Reloaded with --model, it fine-tunes from where it was: it starts better than fresh.
    code, again, err = train(capsys, data, tmp_path / "b", "--model", str(saved), "--epochs", "1")
    assert code == 0, err
    assert f"GPT2LMHeadModel (--model {saved})" in again
    assert perplexities(again)[0] < valid * 1.05


def test_a_tiny_llama_saved_with_save_pretrained_fine_tunes(data, tmp_path, capsys):
    words = load_corpus(data).vocab.words
    folder = tmp_path / "llama"
    save_tiny_llama(folder, len(words), layers=2, max_position_embeddings=64)
    (folder / VOCAB_FILE).write_text("\n".join(words) + "\n")
    code, out, err = train(
        capsys,
        data,
        tmp_path / "run",
        "--model",
        str(folder),
        "--method",
        "serialized",
        "--precision",
        "bf16",
    )
    assert code == 0, err
    assert f"LlamaForCausalLM (--model {folder}), serialized" in out
    assert perplexities(out)[0] < len(words)


def test_resume_continues_from_the_newest_checkpoint(data, tmp_path, capsys):
    common = ("--preset", "tiny", "--method", "none")
    code, out, err = train(capsys, data, tmp_path / "r", *common, "--epochs", "1")
    assert code == 0, err
    steps = int(re.search(r"(\d+) steps", out).group(1))
    code, _, err = train(capsys, data, tmp_path / "r", *common, "--epochs", "2")
    assert code == 2 and "already holds files; pass --resume" in err
    code, out, err = train(capsys, data, tmp_path / "r", *common, "--epochs", "2", "--resume")
    assert code == 0, err
    assert int(re.search(r"(\d+) steps", out).group(1)) == 2 * steps


def test_clip_terms_decides_whether_serialized_imm_clips_its_terms_apart(data, tmp_path, capsys):
    """--clip and --clip-terms reach the trainer: serialized IMM clips its terms' sum as
    one by default (no per-term norms in the logs), apart with --clip-terms separately
    (each term's norm logged); --clip 0 clips nothing."""
    logged = {}
    for name, extra in (
        ("default", ()),
        ("apart", ("--clip-terms", "separately")),
        ("none", ("--clip", "0", "--clip-terms", "separately")),
    ):
        output = tmp_path / name
        args = ("--preset", "tiny", "--method", "serialized", "--max-steps", "4", *extra)
        code, _, err = train(capsys, data, output, *args)
        assert code == 0, err
        state = json.loads((latest_checkpoint(output) / "trainer_state.json").read_text())
        logged[name] = {key for entry in state["log_history"] for key in entry}
    assert "lm_loss" in logged["default"] and "imm_grad_norm" not in logged["default"]
    assert {"lm_grad_norm", "imm_grad_norm"} <= logged["apart"]
    assert "imm_grad_norm" not in logged["none"]


def test_bad_input_exits_2_naming_the_field(data, tmp_path, capsys):
    words = load_corpus(data).vocab.words
    other = tmp_path / "other"
    save_tiny_llama(other, len(words))
    (other / VOCAB_FILE).write_text("\n".join(reversed(words)) + "\n")
    masked = tmp_path / "masked"
    BertForMaskedLM(
        BertConfig(
            vocab_size=len(words),
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=16,
        )
    ).save_pretrained(masked)
    (masked / VOCAB_FILE).write_text("\n".join(words) + "\n")
    cases = {
        ("--model", str(other), "--preset", "tiny"): "--model and --preset: give one",
        ("--preset", "tiny", "--k", "0"): "--k must be an integer >= 1, got '0'",
        ("--preset", "tiny", "--positions", "0"): "--positions must be an integer >= 1, got '0'",
        ("--preset", "tiny", "--lam", "-1"): "lam must be",
        ("--preset", "tiny", "--clip", "-1"): "clip must be a number >= 0, got -1.0",
        ("--preset", "tiny", "--context", "1"): "--context must be an integer >= 2, got '1'",
        ("--model", str(other)): f"differs from the corpus's (id 0 is {words[-1]!r} there",
        ("--model", str(masked)): "needs a causal LM, got a masked one",
        ("--model", str(tmp_path / "nowhere")): "no config.json there",
    }
    for args, message in cases.items():
        code, _, err = train(capsys, data, tmp_path / "bad", *args)
        assert code == 2 and message in err, (args, err)
        assert "Traceback" not in err
        assert not (tmp_path / "bad").exists(), args


def word_piece_tokenizer(folder, text: str, eos: str | None = "</s>"):
    """A byte-pair tokenizer learned from ``text`` (60 tokens), saved in ``folder``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    specials = ["<unk>", *([eos] if eos else [])]
    backend.train_from_iterator(
        text.splitlines(), trainers.BpeTrainer(vocab_size=60, special_tokens=specials)
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", **({"eos_token": eos} if eos else {})
    )
    tokenizer.save_pretrained(folder)
    return tokenizer


@pytest.fixture(scope="module")
def raw(tmp_path_factory, data):
    """The Markov corpus as raw text (words glued into longer strings, a line per sentence,
    blank lines between), and a byte-pair tokenizer learned from its training split."""
    folder = tmp_path_factory.mktemp("raw")
    for split in ("train", "valid", "test"):
        lines = (data / f"{split}.txt").read_text().splitlines()
        (folder / f"{split}.txt").write_text(
            "\n\n".join(" ".join(lines[i : i + 2]) for i in range(0, len(lines), 2))
        )
    tokenizer = word_piece_tokenizer(folder / "tokenizer", (folder / "train.txt").read_text())
    return folder, tokenizer


def test_raw_text_is_read_through_the_tokenizer_a_line_at_a_time(raw):
    from imm_ray.supervised.hf_lm.data import read_tokenized

    folder, tokenizer = raw
    corpus = read_tokenized(folder, tokenizer)
    eos = tokenizer.eos_token_id
    lines = [line for line in (folder / "valid.txt").read_text().splitlines() if line.strip()]
    expected = [i for line in lines for i in (*tokenizer.encode(line), eos)]
    assert corpus.valid.tolist() == expected
    assert len(corpus.vocab) == len(tokenizer) and corpus.vocab.eos_id == eos
    assert corpus.vocab.words[eos] == "<eos>"  # as an ARPA file's </s> is read
    assert corpus.vocab.words[5] == tokenizer.convert_ids_to_tokens(5)


def test_raw_text_trains_through_a_tokenizer_and_the_model_fine_tunes_with_it(
    raw, tmp_path, capsys
):
    folder, tokenizer = raw
    common = ("--tokenizer", str(folder / "tokenizer"), "--max-steps", "6")
    code, out, err = train(capsys, folder, tmp_path / "a", "--preset", "tiny", *common)
    assert code == 0, err
    valid, _ = perplexities(out)
    assert 1 < valid < len(tokenizer)
    saved = tmp_path / "a" / "model"
    assert (saved / "tokenizer.json").is_file() and not (saved / VOCAB_FILE).exists()
    code, again, err = train(capsys, folder, tmp_path / "b", "--model", str(saved), *common)
    assert code == 0, err
    assert f"GPT2LMHeadModel (--model {saved})" in again
    assert perplexities(again)[0] < valid


def test_bad_raw_text_or_tokenizers_exit_2_naming_them(raw, data, tmp_path, capsys):
    folder, tokenizer = raw
    tokens = str(folder / "tokenizer")
    no_end = tmp_path / "no-end"
    word_piece_tokenizer(no_end, "a b c", eos=None)
    empty = tmp_path / "empty"
    empty.mkdir()
    for split in ("train", "valid", "test"):
        (empty / f"{split}.txt").write_text("some words\n" if split != "valid" else "\n \n")
    small = tmp_path / "small"
    save_tiny_llama(small, len(tokenizer) - 1)
    empty_ptb = tmp_path / "empty-ptb"
    empty_ptb.mkdir()
    for split in ("train", "valid", "test"):
        (empty_ptb / f"{split}.txt").write_text("" if split == "train" else "a b\n")
    cases = {
        (folder, "--tokenizer", str(tmp_path / "nowhere")): (
            f"--tokenizer {tmp_path / 'nowhere'}: no tokenizer there"
        ),
        (folder, "--tokenizer", str(no_end)): "neither an eos_token nor a sep_token",
        (empty, "--tokenizer", tokens): "valid.txt is empty",
        (folder, "--tokenizer", tokens, "--model", str(small)): (
            f"it predicts {len(tokenizer) - 1} ids, and the tokenizer has {len(tokenizer)}"
        ),
        (empty_ptb,): "train.txt is empty",
    }
    for (where, *args), message in cases.items():
        code, _, err = train(capsys, where, tmp_path / "bad", *args)
        assert code == 2 and message in err, (args, err)
        assert "Traceback" not in err
        assert not (tmp_path / "bad").exists(), args
