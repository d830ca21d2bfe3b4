"""Pretraining a small BERT with MLM on a PTB-format corpus (``imm-ray train bert-pretrain``).

These machines, like many offline clusters, hold no pretrained checkpoint. This builds
the word-level tokenizer of the corpus (:mod:`~imm_ray.supervised.bert.tokenizer`), a
``BertForMaskedLM`` of a preset size, and trains it with ``transformers``' ``Trainer`` and
its MLM collator (BERT's 15 % / 80-10-10 masking) on ``train.txt``, one sentence per
example (cut at ``max_length``), for a number of optimizer steps. The model and tokenizer
are saved with ``save_pretrained``: ``imm-ray train bert --model OUT`` reads both. Beside
them, ``bigram.arpa`` is the modified Kneser–Ney bigram of ``train.txt`` over the tokenizer's
ids (``[SEP]`` as ``</s>``): the paper's target, a bigram of the pretraining corpus.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from imm_ray import checks
from imm_ray.progress import Progress
from imm_ray.supervised.bert.model import PRESETS


@dataclass(frozen=True)
class PretrainConfig:
    """One pretraining run. Bad values fail at construction, naming the field."""

    preset: str = "small"
    """Encoder size: tiny, small or base."""
    steps: int = 2000
    """Optimizer steps."""
    batch_size: int = 64
    """Sentences per step."""
    lr: float = 5e-4
    """AdamW learning rate, linear warm-up over 5 % of the steps, then linear decay."""
    max_length: int = 64
    """Tokens per sentence, [CLS] and [SEP] included (at most the preset's positions)."""
    mlm_probability: float = 0.15
    """Share of tokens masked."""
    seed: int = 0
    """Seeds the weights, the masks and the data order."""
    device: str = "cpu"
    """cpu or cuda."""
    precision: str = "fp32"
    """fp32, bf16 or fp16."""

    def __post_init__(self) -> None:
        checks.one_of("preset", self.preset, PRESETS)
        for name, low in (("steps", 1), ("batch_size", 1), ("max_length", 8)):
            checks.integer(name, getattr(self, name), low)
        positions = PRESETS[self.preset]["max_position_embeddings"]
        if self.max_length > positions:
            raise ValueError(
                f"max_length must be <= the {self.preset} preset's {positions}, "
                f"got {self.max_length}"
            )
        checks.number("lr", self.lr, above=0)
        checks.number("mlm_probability", self.mlm_probability, above=0, below=1)
        checks.one_of("device", self.device, ("cpu", "cuda"))
        checks.one_of("precision", self.precision, ("fp32", "bf16", "fp16"))


#: The Kneser–Ney bigram of the pretraining corpus, over the tokenizer, saved with the model.
BIGRAM_FILE = "bigram.arpa"


class _Sentences(torch.utils.data.Dataset):
    def __init__(self, ids: list[list[int]]) -> None:
        self.ids = ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return {"input_ids": self.ids[i]}


def pretrain(
    config: PretrainConfig,
    corpus: str | Path,
    out: str | Path,
    progress: Progress | None = None,
) -> dict[str, float]:
    """Pretrains and saves under ``out``; returns ``{"train_loss", "valid_loss", "seconds",
    "parameters"}`` (the MLM losses: the last logged training loss, and valid.txt's)."""
    from transformers import (
        BertForMaskedLM,
        DataCollatorForLanguageModeling,
        PrinterCallback,
        Trainer,
        set_seed,
    )

    from imm_ray.supervised.bert.model import preset_config
    from imm_ray.supervised.bert.tokenizer import build_word_tokenizer, read_lines
    from imm_ray.supervised.lm.corpus import load_corpus, split_file

    corpus, out = Path(corpus).expanduser(), Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise ValueError(f"out must be a folder, and {out} is a file")
    if out.is_dir() and (out / "config.json").exists():
        raise ValueError(f"{out} already holds a model; choose another --out")
    vocabulary = load_corpus(corpus).vocab
    tokenizer = build_word_tokenizer(vocabulary.words)

    def encode(split: str) -> _Sentences:
        lines = read_lines(split_file(corpus, split))
        encoded = tokenizer(lines, truncation=True, max_length=config.max_length)
        return _Sentences(encoded["input_ids"])

    train, valid = encode("train"), encode("valid")
    set_seed(config.seed)
    model = BertForMaskedLM(preset_config(config.preset, len(tokenizer)))
    logged: dict[str, float] = {}
    scratch = tempfile.TemporaryDirectory(prefix="bert-pretrain-")
    args = _training_arguments(config, scratch.name)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=config.mlm_probability)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=valid,
        data_collator=collator,
        processing_class=tokenizer,
        callbacks=[_progress_callback(progress, logged)],
    )
    trainer.remove_callback(PrinterCallback)
    start = time.perf_counter()
    with scratch:
        trainer.train()
        seconds = time.perf_counter() - start
        valid_loss = float(trainer.evaluate()["eval_loss"])
    if progress is not None:
        progress.write(f"{config.steps} steps in {seconds:.0f} s, valid MLM loss {valid_loss:.3f}")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    from imm_ray.supervised.bert.finetune import restricted_model, write_bigram

    write_bigram(tokenizer, restricted_model(tokenizer, corpus)[1], out / BIGRAM_FILE)
    return {
        "train_loss": logged.get("train_loss", math.nan),
        "valid_loss": valid_loss,
        "seconds": seconds,
        "parameters": float(sum(p.numel() for p in model.parameters())),
    }


def _training_arguments(config: PretrainConfig, output_dir: str):
    """Trainer's arguments of a pretraining run: linear warm-up over 5 % of the steps (an
    int: steps on every transformers version), about 20 logged losses, nothing saved."""
    from transformers import TrainingArguments

    from imm_ray.supervised.bert.finetune import warmup_steps

    return TrainingArguments(
        output_dir=output_dir,
        max_steps=config.steps,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        learning_rate=config.lr,
        warmup_steps=warmup_steps(0.05, config.steps),
        weight_decay=0.01,
        seed=config.seed,
        logging_steps=max(1, min(50, config.steps // 20)),
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        use_cpu=config.device == "cpu",
        bf16=config.precision == "bf16",
        fp16=config.precision == "fp16",
    )


def _progress_callback(progress: Progress | None, logged: dict[str, float]):
    """A Trainer callback that keeps the last logged training loss in ``logged`` and shows
    the steps on ``progress``."""
    from transformers import TrainerCallback

    class ProgressLine(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            if progress is not None:
                progress.start(state.max_steps, "step", initial=state.global_step)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                logged["train_loss"] = float(logs["loss"])
                if progress is not None:
                    progress.update(state.global_step, f"MLM loss {logs['loss']:.3f}")

        def on_train_end(self, args, state, control, **kwargs):
            if progress is not None:
                progress.close()

    return ProgressLine()
