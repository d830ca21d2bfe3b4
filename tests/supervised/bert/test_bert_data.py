"""The tokenizer, the two-headed model and its checkpoints, GLUE's TSV layouts, the
acceptability task, and the metrics against hand computations."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, BertForMaskedLM, BertForSequenceClassification

from imm_ray.supervised.bert.acceptability import make_acceptability
from imm_ray.supervised.bert.finetune import read_bigram, restricted_model, write_bigram
from imm_ray.supervised.bert.metrics import accuracy, f1_score, matthews_correlation, score
from imm_ray.supervised.bert.model import load_model, preset_config
from imm_ray.supervised.bert.tasks import TASKS, load_task, task_spec
from imm_ray.supervised.bert.tokenizer import SPECIALS, build_word_tokenizer
from imm_ray.supervised.lm.corpus import load_corpus, read_sentences


def test_word_tokenizer_keeps_corpus_words_as_single_ids(bert_corpus, bert_tokenizer, tmp_path):
    words = load_corpus(bert_corpus).vocab.words
    assert [bert_tokenizer.convert_ids_to_tokens(i) for i in range(5)] == list(SPECIALS)
    assert len(bert_tokenizer) == len(SPECIALS) + len(words) - 2  # <eos>, <unk> left out
    first, second = words[2], words[3]
    encoded = bert_tokenizer(f"{first.upper()} <unk> {second}", first)
    assert encoded["input_ids"] == [
        2,
        bert_tokenizer.convert_tokens_to_ids(first),
        1,
        bert_tokenizer.convert_tokens_to_ids(second),
        3,
        bert_tokenizer.convert_tokens_to_ids(first),
        3,
    ]
    assert encoded["token_type_ids"] == [0, 0, 0, 0, 0, 1, 1]
    bert_tokenizer.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert (
        again(f"{first} {second}")["input_ids"] == bert_tokenizer(f"{first} {second}")["input_ids"]
    )


def test_checkpoint_loads_with_both_heads_and_a_tied_decoder(bert_checkpoint):
    model = load_model(bert_checkpoint, num_labels=3)
    saved = BertForMaskedLM.from_pretrained(bert_checkpoint)
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    torch.testing.assert_close(
        model.cls.predictions.transform.dense.weight, saved.cls.predictions.transform.dense.weight
    )
    ids = torch.tensor([[2, 7, 8, 9, 3]])
    model.eval(), saved.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            model(input_ids=ids, head="mlm").logits, saved(input_ids=ids).logits
        )
        assert model(input_ids=ids).logits.shape == (1, 3)


def test_a_checkpoint_without_mlm_head_is_refused(tmp_path, bert_tokenizer):
    BertForSequenceClassification(preset_config("tiny", len(bert_tokenizer))).save_pretrained(
        tmp_path
    )
    with pytest.raises(ValueError, match=r"has no MLM head \(missing cls\.predictions\."):
        load_model(tmp_path, num_labels=2)
    with pytest.raises(ValueError, match="does not exist"):
        load_model(tmp_path / "nowhere", num_labels=2)


def _write(path, rows):
    path.write_text("".join("\t".join(row) + "\n" for row in rows))


def test_glue_layouts_are_read_and_bad_files_are_named(tmp_path):
    cola = tmp_path / "cola"
    cola.mkdir()
    _write(cola / "train.tsv", [["gj04", "1", "", "the cat sat ."], ["gj04", "0", "*", "cat the"]])
    _write(cola / "dev.tsv", [["gj04", "1", "", "a dog ran ."]])
    _write(cola / "test.tsv", [["index", "sentence"], ["0", "who ran ?"]])
    splits = load_task(TASKS["cola"], cola)
    assert splits["train"].text_a == ["the cat sat .", "cat the"]
    assert splits["train"].labels == [1, 0] and splits["train"].text_b is None
    assert splits["test"].text_a == ["who ran ?"] and splits["test"].labels is None

    mrpc = tmp_path / "mrpc"
    mrpc.mkdir()
    header = ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]
    _write(mrpc / "train.tsv", [header, ["1", "7", "8", 'He said "yes"', "He agreed"]])
    _write(mrpc / "dev.tsv", [header, ["0", "1", "2", "a", "b"]])
    splits = load_task(TASKS["mrpc"], mrpc)
    assert splits["train"].text_a == ['He said "yes"'] and splits["train"].text_b == ["He agreed"]

    rte = tmp_path / "rte"
    rte.mkdir()
    header = ["index", "sentence1", "sentence2", "label"]
    _write(rte / "train.tsv", [header, ["0", "a b", "b", "not_entailment"]])
    _write(rte / "dev.tsv", [header, ["0", "a", "a", "entailment"]])
    assert load_task(TASKS["rte"], rte)["train"].labels == [1]
    with pytest.raises(ValueError, match=r"task qnli: .*train.tsv has no column 'question'"):
        load_task(TASKS["qnli"], rte)
    with pytest.raises(ValueError, match=r"task rte: .* has no dev.tsv"):
        (rte / "dev.tsv").unlink()
        load_task(TASKS["rte"], rte)
    _write(rte / "dev.tsv", [header, ["0", "a", "a", "maybe"]])
    with pytest.raises(ValueError, match=r"label 'maybe' is not one of entailment, not_entailment"):
        load_task(TASKS["rte"], rte)
    with pytest.raises(
        ValueError, match="task must be one of cola, mrpc, qnli, rte, acceptability"
    ):
        task_spec("sst2")


def test_acceptability_task_is_balanced_real_and_minimally_corrupted(bert_corpus, tmp_path):
    summary = make_acceptability(bert_corpus, tmp_path, seed=1, max_words=20, max_examples=40)
    sentences = {" ".join(s) for s in read_sentences(bert_corpus / "train.txt")}
    rows = [line.split("\t") for line in (tmp_path / "train.tsv").read_text().splitlines()]
    assert summary.examples["train.tsv"] == len(rows) == 40
    assert sum(row[1] == "1" for row in rows) == 20
    originals = [row[3] for row in rows if row[1] == "1"]
    assert all(s in sentences for s in originals)
    for row in rows:
        if row[1] == "0":
            words = row[3].split()
            assert row[2] == "*" and 4 <= len(words) <= 20
    corruptions = summary.corruptions["train.tsv"]
    assert corruptions["swap"] + corruptions["replace"] == 20
    assert corruptions["swap"] > 0 and corruptions["replace"] > 0
    splits = load_task(TASKS["acceptability"], tmp_path)
    assert set(splits) == {"train", "dev", "test"} and splits["test"].labels is not None


def test_metrics_match_hand_computations():
    predictions = [1, 1, 0, 0, 1, 0, 1, 1]
    labels = [1, 0, 0, 1, 1, 0, 1, 0]
    # TP 3, TN 2, FP 2, FN 1
    assert matthews_correlation(predictions, labels) == pytest.approx(
        (3 * 2 - 2 * 1) / math.sqrt(5 * 4 * 4 * 3)
    )
    assert f1_score(predictions, labels) == pytest.approx(6 / 9)
    assert accuracy(predictions, labels) == pytest.approx(5 / 8)
    assert matthews_correlation([1, 1, 1], [1, 0, 1]) == 0.0
    assert score("mcc", labels, labels) == pytest.approx(1.0)
    assert score("mcc", [1 - y for y in labels], labels) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="metric must be one of mcc, f1, accuracy"):
        score("auc", labels, labels)


def test_bigram_round_trips_through_arpa_and_another_vocabulary_is_refused(
    bert_tokenizer, bert_corpus, tmp_path
):
    _, bigram = restricted_model(bert_tokenizer, bert_corpus)
    write_bigram(bert_tokenizer, bigram, tmp_path / "bigram.arpa")
    again = read_bigram(bert_tokenizer, tmp_path / "bigram.arpa")
    contexts = torch.arange(len(bert_tokenizer))
    torch.testing.assert_close(again.rows(contexts), bigram.rows(contexts), rtol=1e-4, atol=1e-7)
    other = build_word_tokenizer(["<eos>", "<unk>", "alpha", "beta"])
    with pytest.raises(ValueError, match="the bigram's vocabulary differs from the tokenizer's"):
        read_bigram(other, tmp_path / "bigram.arpa")


def test_a_json_task_file_describes_a_new_tsv_layout(tmp_path):
    folder = tmp_path / "sst"
    folder.mkdir()
    header = ["sentence", "label"]
    _write(folder / "train.tsv", [header, ["a fine film", "pos"], ["dull", "neg"]])
    _write(folder / "dev.tsv", [header, ["fine", "pos"]])
    spec_file = tmp_path / "sst.json"
    spec_file.write_text(
        '{"name": "sst", "header": true, "text_a": "sentence", "label": "label",'
        ' "labels": ["neg", "pos"], "metric": "accuracy"}'
    )
    spec = task_spec(str(spec_file))
    assert spec.num_labels == 2 and spec.text_b is None
    assert load_task(spec, folder)["train"].labels == [1, 0]
    spec_file.write_text(
        '{"name": "x", "header": false, "text_a": "s", "label": 0,'
        ' "labels": ["0", "1"], "metric": "mcc"}'
    )
    with pytest.raises(ValueError, match="text_a must be one of the files' column numbers"):
        task_spec(str(spec_file))


def _cache_glue(cache: Path, task: str, splits: dict[str, dict[str, list]]) -> None:
    """What ``datasets.load_dataset("nyu-mll/glue", task)`` leaves in ``cache`` after one
    online call: the Hub's parquet files prepared by datasets' parquet builder into
    ``nyu-mll___glue/<task>/0.0.0/<hash>/glue-<split>.arrow`` with its dataset_info.json
    (written here from parquet files made on the spot, with GLUE's ClassLabel labels)."""
    import datasets
    from datasets.data_files import DataFilesDict
    from datasets.packaged_modules.parquet.parquet import Parquet

    source = cache.parent / f"hub-{task}"
    source.mkdir(parents=True)
    names = ["unacceptable", "acceptable"] if task == "cola" else ["a", "b"]
    files = {}
    for split, columns in splits.items():
        features = datasets.Features(
            {
                **{c: datasets.Value("string") for c in columns if c != "label"},
                "label": datasets.ClassLabel(names=names),
            }
        )
        path = source / f"{split}-00000-of-00001.parquet"
        data = datasets.Dataset.from_dict(columns, features=features)  # test: label -1
        data.to_parquet(str(path))
        files[split] = [str(path)]
    builder = Parquet(
        cache_dir=str(source / "prepared"),
        dataset_name="glue",
        config_name=task,
        config_id=task,
        data_files=DataFilesDict.from_patterns(files),
        hash="bcb7f8d1b1fd5d1a5f2c3c8e6e1c3c9d3e0f7a11",
    )
    builder.download_and_prepare()
    (cache / "nyu-mll___glue").mkdir(parents=True, exist_ok=True)
    (source / "prepared" / "glue" / task).rename(cache / "nyu-mll___glue" / task)


def test_glue_is_read_from_the_datasets_cache_offline(tmp_path, monkeypatch):
    import datasets

    cache = tmp_path / "datasets"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)  # the flag the user left
    with pytest.raises(ValueError, match=r"task cola: not in the datasets cache .*pass --data"):
        load_task(TASKS["cola"], None)
    assert datasets.config.HF_HUB_OFFLINE is False  # put back

    _cache_glue(
        cache,
        "cola",
        {
            "train": {"sentence": ["the cat sat .", "cat the sat ."], "label": [1, 0]},
            "validation": {"sentence": ["a dog ran ."], "label": [1]},
            "test": {"sentence": ["who ran ?"], "label": [-1]},
        },
    )
    _cache_glue(
        cache,
        "mrpc",
        {
            "train": {"sentence1": ["he said yes"], "sentence2": ["he agreed"], "label": [1]},
            "validation": {"sentence1": ["a"], "sentence2": ["b"], "label": [0]},
        },
    )
    splits = load_task(TASKS["cola"], None)
    assert splits["train"].text_a == ["the cat sat .", "cat the sat ."]
    assert splits["train"].labels == [1, 0] and splits["train"].text_b is None
    assert splits["dev"].labels == [1]
    assert splits["test"].text_a == ["who ran ?"] and splits["test"].labels is None
    pair = load_task(TASKS["mrpc"], None)
    assert pair["train"].text_a == ["he said yes"] and pair["train"].text_b == ["he agreed"]
    assert pair["dev"].labels == [0] and "test" not in pair
    assert datasets.config.HF_HUB_OFFLINE is False
    # A task that is not a GLUE task has no cache to fall back on.
    with pytest.raises(ValueError, match="task acceptability needs --data"):
        load_task(TASKS["acceptability"], None)
