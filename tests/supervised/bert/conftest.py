"""Shared BERT fixtures: a synthetic PTB-format corpus, its word-level tokenizer, a tiny
BERT checkpoint with its MLM head (fresh weights), and an acceptability task built from
the corpus. Everything is generated here, in temporary folders."""

from __future__ import annotations

import pytest
from tiny_bert import markov_corpus

from imm_ray.console import quiet_transformers
from imm_ray.supervised.bert.acceptability import make_acceptability
from imm_ray.supervised.bert.model import preset_config
from imm_ray.supervised.bert.tokenizer import build_word_tokenizer
from imm_ray.supervised.lm.corpus import load_corpus

quiet_transformers()


@pytest.fixture(scope="session")
def bert_corpus(tmp_path_factory):
    """A PTB-format folder from an order-2 Markov source over 40 symbols."""
    return markov_corpus(tmp_path_factory.mktemp("bert-corpus"), 40, 3, (4000, 800, 800))


@pytest.fixture(scope="session")
def bert_tokenizer(bert_corpus):
    return build_word_tokenizer(load_corpus(bert_corpus).vocab.words)


@pytest.fixture(scope="session")
def bert_checkpoint(tmp_path_factory, bert_tokenizer):
    """A tiny BertForMaskedLM saved with its tokenizer (what bert-pretrain writes)."""
    import torch
    from transformers import BertForMaskedLM

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("bert-model")
    BertForMaskedLM(preset_config("tiny", len(bert_tokenizer))).save_pretrained(folder)
    bert_tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def acceptability_task(tmp_path_factory, bert_corpus):
    folder = tmp_path_factory.mktemp("acceptability")
    make_acceptability(bert_corpus, folder, seed=0, max_words=20, max_examples=48)
    return folder
