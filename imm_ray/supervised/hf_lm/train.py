"""Training a causal Hugging Face LM with :class:`IMMTrainer` on a PTB-format corpus, from
fresh weights over the corpus's word vocabulary (a GPT-2 config of a preset's size) or
from a saved model folder (``save_pretrained``) over the same vocabulary; or on raw text
read through a tokenizer (:mod:`~imm_ray.supervised.hf_lm.data`), over its ids.

The training split, preceded by ``<eos>``, is cut into windows of ``context + 1`` tokens
(consecutive windows share one token), so that every training token is predicted once an
epoch from the tokens before it in its window. Validation and test perplexity, and the
induced-bigram perplexities of Table 5, are :mod:`imm_ray.supervised.hf_lm.metrics`'s over
chunks of ``context`` inputs. A model folder the run writes holds the vocabulary it was
trained over (``vocab.txt``, one word per line, in id order), which a later ``--model``
must match, or the tokenizer it read raw text through.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imm_ray import checks
from imm_ray.progress import Progress
from imm_ray.restricted.kneser_ney import KneserNeyBigram
from imm_ray.supervised.hf_lm.config import CAUSAL_METHODS, CausalIMMConfig

#: The vocabulary a model folder was trained over, one word per line in id order.
VOCAB_FILE = "vocab.txt"
#: The generator of the trainer's draws, saved with each checkpoint.
DRAWS_FILE = "imm_draws.pt"

PRESETS: dict[str, dict[str, Any]] = {
    # A few seconds on a CPU: for tests.
    "tiny": {"layers": 2, "width": 32, "heads": 2, "context": 16, "batch_size": 8, "epochs": 1},
    # About 2 layers × 128 wide (issue 23's evidence), the LSTM's 35-token unroll.
    "small": {"layers": 2, "width": 128, "heads": 4, "context": 35, "batch_size": 20, "epochs": 4},
}


@dataclass(frozen=True)
class CausalLMConfig:
    """A causal LM's training run (see the module docstring)."""

    method: str = "imm"
    """One of none, noising, imm, serialized."""
    lam: float = 0.2
    k: int = 10
    every: int = 5
    refresh_every: int = 50
    positions: int | None = None
    gamma0: float = 0.2
    clip_separately: bool | None = None
    """Whether the IMM term's gradient is clipped apart from the LM term's; None: sampled
    IMM's is, serialized IMM's is not (:attr:`CausalIMMConfig.clips_separately`)."""
    layers: int = 2
    width: int = 128
    heads: int = 4
    context: int = 35
    """Tokens a window's model reads (>= 2)."""
    batch_size: int = 20
    lr: float = 1e-3
    weight_decay: float = 0.01
    clip: float = 1.0
    """The gradient norm bound (0: none): of each term where they are clipped separately
    (``clip_separately``), else of their sum."""
    epochs: int = 4
    max_steps: int | None = None
    """Optimizer steps in all, overriding epochs when given."""
    seed: int = 0
    device: str = "cpu"
    precision: str = "fp32"

    def __post_init__(self) -> None:
        checks.one_of("method", self.method, CAUSAL_METHODS)
        checks.integer("context", self.context, 2)
        for field in ("layers", "width", "heads", "batch_size", "epochs"):
            checks.integer(field, getattr(self, field), 1)
        if self.max_steps is not None:
            checks.integer("max_steps", self.max_steps, 1)
        checks.number("lr", self.lr, above=0)
        checks.number("weight_decay", self.weight_decay, at_least=0)
        checks.number("clip", self.clip, at_least=0)
        checks.integer("seed", self.seed, 0)
        checks.one_of("precision", self.precision, ("fp32", "bf16"))
        if self.width % self.heads:
            checks.fail("heads", self.heads, f"a divisor of width {self.width}")
        self.imm_config()  # its own checks (λ, k, every, r, γ0)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> CausalLMConfig:
        """The preset's sizes with ``overrides`` (None values ignored)."""
        checks.one_of("preset", name, tuple(PRESETS))
        fields = {**PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}}
        return cls(**fields)

    def imm_config(self) -> CausalIMMConfig:
        """The trainer's part of the run: the fields the two configs share."""
        shared = (f.name for f in dataclasses.fields(CausalIMMConfig))
        return CausalIMMConfig(**{name: getattr(self, name) for name in shared})

    def replace(self, **changes: Any) -> CausalLMConfig:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def fresh_model(config: CausalLMConfig, vocab_size: int, eos_id: int):
    """A GPT-2 of the config's size over ``vocab_size`` word ids, seeded with its seed."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(config.seed)
    model_config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=config.context + 1,
        n_embd=config.width,
        n_layer=config.layers,
        n_head=config.heads,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
    )
    return GPT2LMHeadModel(model_config)


def load_model(folder: str | Path, words: list[str] | None, tokens: int | None = None):
    """The causal LM saved in ``folder`` (``save_pretrained``), which must have been trained
    over ``words`` (its ``vocab.txt``) or, with ``words`` None, predict at least ``tokens``
    ids (a tokenizer's); a ``ValueError`` naming ``--model`` otherwise."""
    from transformers import AutoModelForCausalLM

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ValueError(f"--model {folder}: no config.json there (a save_pretrained folder)")
    if words is not None:
        _check_vocabulary(folder, words)
    # AutoModelForCausalLM would load a masked LM's weights into its model type's causal
    # class (BERT's BertLMHeadModel, attending both ways): the saved class decides.
    import json

    from imm_ray.supervised.hf_lm.trainer import model_kind

    for name in json.loads((folder / "config.json").read_text()).get("architectures") or []:
        kind = model_kind(name)
        if kind != "causal":
            raise ValueError(f"--model {folder}: needs a causal LM, got a {kind} one ({name})")
    with _no_save_bars():
        model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    predicted = model.get_output_embeddings().weight.shape[0]
    if tokens is not None and predicted < tokens:
        raise ValueError(
            f"--model {folder}: it predicts {predicted} ids, and the tokenizer has {tokens}: "
            "give the tokenizer the model was trained with"
        )
    return model


def _check_vocabulary(folder: Path, words: list[str]) -> None:
    """A ``ValueError`` naming ``--model`` unless ``folder/vocab.txt`` lists ``words``."""
    vocab = folder / VOCAB_FILE
    if not vocab.is_file():
        raise ValueError(
            f"--model {folder}: no {VOCAB_FILE} there, so its token ids cannot be matched to "
            "the corpus's words"
        )
    saved = vocab.read_text(encoding="utf-8").splitlines()
    if saved != list(words):
        if len(saved) != len(words):
            how = f"{len(saved)} words, the corpus {len(words)}"
        else:
            at = next(i for i, (a, b) in enumerate(zip(saved, words, strict=True)) if a != b)
            how = f"id {at} is {saved[at]!r} there and {words[at]!r} in the corpus"
        raise ValueError(
            f"--model {folder}: its vocabulary ({VOCAB_FILE}) differs from the corpus's ({how}); "
            "the model and the bigram must share one"
        )


def model_positions(model) -> int:
    """The most tokens ``model`` reads at once (its config's ``n_positions`` or
    ``max_position_embeddings``)."""
    config = model.config
    return getattr(config, "n_positions", None) or config.max_position_embeddings


def windows(ids: np.ndarray, eos_id: int, context: int) -> list[dict[str, torch.Tensor]]:
    """The training examples: the split after ``<eos>`` in windows of ``context + 1``
    tokens, consecutive ones sharing a token (the last is dropped if shorter)."""
    stream = torch.cat(
        [torch.tensor([eos_id]), torch.as_tensor(np.asarray(ids), dtype=torch.int64)]
    )
    count = (len(stream) - 1) // context
    if count < 1:
        raise ValueError(
            f"the training split ({len(stream) - 1} tokens) is shorter than one window of "
            f"context {context}"
        )
    starts = torch.arange(count) * context
    rows = stream[starts.unsqueeze(1) + torch.arange(context + 1)]
    return [{"input_ids": row, "labels": row} for row in rows]


def _progress_callback(progress: Progress):
    from transformers import TrainerCallback

    class ProgressLine(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            progress.start(state.max_steps, "step", initial=state.global_step)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "loss" not in logs:
                return
            terms = ", ".join(
                f"{name} {logs[key]:.3f}"
                for name, key in (("lm", "lm_loss"), ("imm", "imm_risk"))
                if key in logs
            )
            progress.update(state.global_step, terms)

        def on_train_end(self, args, state, control, **kwargs):
            progress.close()

    return ProgressLine()


def _draws_callback(trainer_ref: list):
    """Saves the trainer's generator with every checkpoint, so that ``--resume`` draws
    the windows and noise an uninterrupted run would have."""
    from transformers import TrainerCallback

    class KeepDraws(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                torch.save(trainer_ref[0].generator.get_state(), folder / DRAWS_FILE)

    return KeepDraws()


def training_arguments(config: CausalLMConfig, output_dir: Path, steps_per_epoch: int):
    from transformers import TrainingArguments

    total = config.max_steps or steps_per_epoch * config.epochs
    return TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.lr,
        weight_decay=config.weight_decay,
        max_grad_norm=config.clip,
        lr_scheduler_type="linear",
        warmup_steps=math.ceil(0.05 * total),
        seed=config.seed,
        save_strategy="epoch" if config.max_steps is None else "steps",
        save_steps=steps_per_epoch,
        save_total_limit=1,
        logging_strategy="steps",
        logging_steps=max(1, min(50, total // 20)),
        report_to=[],
        disable_tqdm=True,
        use_cpu=config.device == "cpu",
        bf16=config.precision == "bf16",
        dataloader_num_workers=0,
        remove_unused_columns=False,
    )


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest ``checkpoint-N`` folder of a run, or None."""
    found = [p for p in output_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    return max(found, key=lambda p: int(p.name.split("-")[-1])) if found else None


def train_causal_lm(
    config: CausalLMConfig,
    corpus,
    bigram: KneserNeyBigram,
    output_dir: str | Path,
    model=None,
    resume: bool = False,
    progress: Progress | None = None,
    tokenizer=None,
    more_callbacks: list | None = None,
) -> tuple[Any, dict[str, float]]:
    """Trains on ``corpus`` (a PTB-format :class:`~imm_ray.supervised.lm.corpus.Corpus`,
    or raw text through ``tokenizer``, a
    :class:`~imm_ray.supervised.hf_lm.data.TokenizedCorpus`) and returns ``(model,
    results)``: ``valid_ppl``, ``test_ppl``, ``induced_<split>_ppl`` and ``kn_<split>_ppl``
    for train, valid and test, ``steps``, ``train_seconds``. ``model`` is fine-tuned when
    given, else a fresh one of the config's size is trained; the model, its vocabulary
    (``vocab.txt``, or the tokenizer) and a checkpoint per epoch go to ``output_dir``.
    ``more_callbacks`` are Trainer callbacks of the caller's; their ``on_save`` sees each
    checkpoint whole (the draws' generator saved in it too)."""
    from transformers import PrinterCallback

    from imm_ray.supervised.hf_lm import metrics
    from imm_ray.supervised.hf_lm.trainer import IMMTrainer
    from imm_ray.supervised.lm.metrics import bigram_perplexity

    output_dir = Path(output_dir)
    eos = corpus.vocab.eos_id
    vocab_size = len(corpus.vocab)
    if model is None:
        model = fresh_model(config, vocab_size, eos)
    positions = model_positions(model)
    if positions < config.context + 1:
        raise ValueError(
            f"context {config.context}: the model reads at most {positions} tokens, and a "
            f"window is context + 1 = {config.context + 1}"
        )
    data = windows(corpus.train, eos, config.context)
    steps_per_epoch = math.ceil(len(data) / config.batch_size)
    holder: list = []
    callbacks = [_draws_callback(holder)]
    if progress is not None:
        callbacks.append(_progress_callback(progress))
    callbacks += more_callbacks or []
    trainer = IMMTrainer(
        model,
        training_arguments(config, output_dir, steps_per_epoch),
        train_dataset=data,
        imm_config=config.imm_config(),
        corpus=corpus.train,
        bigram=bigram,
        eos_id=eos,
        callbacks=callbacks,
    )
    holder.append(trainer)
    trainer.remove_callback(PrinterCallback)
    resume_from = None
    if resume:
        resume_from = latest_checkpoint(output_dir)
        if resume_from is None:
            raise ValueError(f"--resume: no checkpoint in {output_dir}")
        draws = resume_from / DRAWS_FILE
        if draws.is_file():
            trainer.generator.set_state(torch.load(draws))
    start = time.perf_counter()
    with _no_save_bars():
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        seconds = time.perf_counter() - start
        model = trainer.model
        model.save_pretrained(output_dir / "model")
    if tokenizer is not None:
        tokenizer.save_pretrained(output_dir / "model")
    else:
        (output_dir / "model" / VOCAB_FILE).write_text(
            "\n".join(corpus.vocab.words) + "\n", encoding="utf-8"
        )
    batch = max(config.batch_size, 16)
    results = {
        "valid_ppl": metrics.perplexity(model, corpus.valid, eos, config.context, batch),
        "test_ppl": metrics.perplexity(model, corpus.test, eos, config.context, batch),
        "steps": float(trainer.state.global_step),
        "train_seconds": seconds,
    }
    induced = metrics.induced_bigram(model, corpus.train, eos, config.context, batch)
    for split in ("train", "valid", "test"):
        ids = corpus.split(split)
        results[f"induced_{split}_ppl"] = bigram_perplexity(induced, ids, eos)
        results[f"kn_{split}_ppl"] = bigram.perplexity(ids)  # as the LSTM's runs report it
    return model, results


@contextlib.contextmanager
def _no_save_bars():
    """transformers' progress bars (a bar per ``save_pretrained`` or ``from_pretrained``)
    off, as they were after."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()
