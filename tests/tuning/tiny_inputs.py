"""Input folders of a tiny BERT sweep, written from scratch, for the tests of inputs."""

from __future__ import annotations

from pathlib import Path

import torch

from imm_ray.supervised.lm.corpus import load_corpus
from imm_ray.supervised.lm.synthetic import MarkovSource
from tuning.bert import BertExperiment, BertSetting


def tiny_bert_folders(root: Path) -> tuple[Path, Path, Path]:
    """A corpus, an acceptability task and a tiny checkpoint with its tokenizer under
    ``root``: ``(corpus, task, model)``."""
    from transformers import BertForMaskedLM

    from imm_ray.console import quiet_transformers
    from imm_ray.supervised.bert.acceptability import make_acceptability
    from imm_ray.supervised.bert.model import preset_config
    from imm_ray.supervised.bert.tokenizer import build_word_tokenizer

    quiet_transformers()
    corpus, task, model = root / "corpus", root / "task", root / "model"
    MarkovSource.random(30, seed=2).write_corpus(corpus, (3000, 600, 600), seed=2)
    make_acceptability(corpus, task, max_examples=24)
    tokenizer = build_word_tokenizer(load_corpus(corpus).vocab.words)
    torch.manual_seed(0)
    BertForMaskedLM(preset_config("tiny", len(tokenizer))).save_pretrained(model)
    tokenizer.save_pretrained(model)
    return corpus, task, model


def tiny_table2(corpus: Path, task: Path, model: Path) -> BertExperiment:
    """BERT and +MLM+IMM, one seed (1), two epochs of a tiny checkpoint."""
    return BertExperiment(
        "bert",
        (BertSetting("BERT", "base"), BertSetting("+MLM+IMM", "imm")),
        data=str(task),
        model=str(model),
        corpus=str(corpus),
        overrides={"epochs": 2, "batch_size": 8, "positions": 2, "max_length": 32, "lr": 3e-3},
        seeds=(1,),
    )
