"""One BERT fine-tuning run (``imm-ray train bert`` and the ``table2`` trials): a task, a
checkpoint (or a preset with fresh weights), a method (base, +MLM, +MLM+IMM), a seed.

:func:`read_inputs` reads and checks what a run reads from disk (task files, the checkpoint's
files and its tokenizer, corpus, bigram) into a picklable :class:`RunInputs`, which a
sweep's driver reads once and hands to its trials through Ray's object store;
:func:`prepare_run` builds the run's model from it and checks that the parts fit, before any
training starts; :func:`finetune` trains with :class:`IMMTrainer`, evaluating the task's
metric on ``dev`` after every epoch and on ``dev`` and a labeled ``test`` at the end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imm_ray import checks
from imm_ray.progress import Progress
from imm_ray.supervised.hf_lm.config import MaskedIMMConfig

PRECISIONS = ("fp32", "bf16", "fp16")
#: The files of a checkpoint folder that ``from_pretrained`` reads (configuration, weights,
#: tokenizer); Trainer's resume state (optimizer.pt, rng_state.pth) and other files stay.
CHECKPOINT_FILES = ("*.json", "*.safetensors", "*.bin", "vocab.txt", "merges.txt", "*.model")


@dataclass(frozen=True)
class FinetuneConfig:
    """One fine-tuning run. Bad values fail at construction, naming the field."""

    task: str = "acceptability"
    """cola, mrpc, qnli, rte, acceptability, or a .json task file."""
    data: str | None = None
    """The task's folder of TSV files (None: the datasets cache, GLUE tasks only)."""
    model: str = "tiny"
    """A checkpoint folder with its tokenizer, or a preset (tiny, small, base: fresh weights)."""
    corpus: str | None = None
    """PTB-format folder whose train.txt gives the bigram and the histories (the
    pretraining corpus); with a preset model also the tokenizer's vocabulary."""
    bigram: str | None = None
    """An ARPA bigram over the tokenizer's vocabulary (``[SEP]`` as ``</s>``, e.g. the
    ``bigram.arpa`` that bert-pretrain writes) instead of estimating it on corpus."""
    method: str = "imm"
    """base, mlm (+ MLM) or imm (+ MLM + λ·IMM)."""
    lam: float = 0.2
    """λ, the weight of IMM."""
    k: int = 5
    """Histories per position."""
    positions: int | None = None
    """Word positions per sentence that carry IMM (None: all)."""
    mlm_probability: float = 0.15
    """Share of word tokens masked for the MLM loss."""
    epochs: int = 3
    """Training epochs."""
    batch_size: int = 32
    """Examples per batch."""
    lr: float = 5e-5
    """AdamW learning rate (linear decay after warm-up)."""
    warmup_ratio: float = 0.1
    """Share of the steps with a linear warm-up of the learning rate."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    clip: float = 1.0
    """Gradient-norm clip (0: none); with MLM/IMM each term is clipped separately."""
    max_length: int = 64
    """Tokens per example (longer ones are cut)."""
    max_train_examples: int | None = None
    """Use only the first N training examples (None: all)."""
    seed: int = 0
    """Seeds the weights of new heads, data order, masks and history draws."""
    device: str = "cpu"
    """cpu or cuda."""
    precision: str = "fp32"
    """fp32, or bf16 / fp16 autocast (GPU)."""

    def __post_init__(self) -> None:
        self.imm_config()
        for name, low in (("epochs", 1), ("batch_size", 1), ("max_length", 8)):
            checks.integer(name, getattr(self, name), low)
        checks.integer(
            "max_train_examples",
            self.max_train_examples,
            2,
            optional=True,
            allowed="an integer >= 2 or None",
        )
        checks.number("warmup_ratio", self.warmup_ratio, at_least=0, below=1)
        checks.number("weight_decay", self.weight_decay, at_least=0, below=math.inf)
        checks.number("lr", self.lr, above=0)
        checks.number("clip", self.clip, at_least=0)
        checks.integer("seed", self.seed, 0)
        if self.device not in ("cpu", "cuda"):
            checks.fail("device", self.device, "cpu or cuda")
        checks.one_of("precision", self.precision, PRECISIONS)
        if self.precision == "fp16" and self.clip > 0 and self.method != "base":
            raise ValueError(
                "precision fp16 cannot be combined with clipping the terms separately "
                "(clip > 0 with mlm or imm): use bf16, or clip 0"
            )

    def imm_config(self) -> MaskedIMMConfig:
        return MaskedIMMConfig(
            method=self.method,
            lam=self.lam,
            k=self.k,
            positions=self.positions,
            mlm_probability=self.mlm_probability,
        )


@dataclass
class RunInputs:
    """What runs read from disk, read and checked once; picklable, so that a sweep's driver
    reads it and Ray's object store hands it to every trial, which opens no path."""

    spec: Any
    splits: dict[str, Any]
    tokenizer: Any
    checkpoint: dict[str, bytes] | None
    """The checkpoint folder's files (:data:`CHECKPOINT_FILES`: name → bytes); ``None``
    for a preset (fresh weights)."""
    stream: np.ndarray | None
    """The corpus through the tokenizer: the histories' stream (read for IMM only)."""
    bigram: Any
    """The Kneser–Ney bigram of ``stream``, or the ``bigram`` ARPA file's (IMM only)."""


def inputs_key(config: FinetuneConfig) -> tuple:
    """The fields that name what a run reads: runs with equal keys share one RunInputs."""
    return (config.task, config.data, config.model, config.corpus, config.bigram)


@dataclass
class Run:
    """Everything a run needs, loaded and checked."""

    config: FinetuneConfig
    spec: Any
    splits: dict[str, Any]
    tokenizer: Any
    model: Any
    corpus: np.ndarray | None
    bigram: Any


def load_tokenizer(model: str, corpus: str | None):
    """The checkpoint's own tokenizer, or for a preset one over ``corpus``'s vocabulary."""
    from imm_ray.supervised.bert.model import PRESETS
    from imm_ray.supervised.bert.tokenizer import build_word_tokenizer

    if model in PRESETS:
        if corpus is None:
            raise ValueError(
                f"model preset {model} needs corpus: its vocabulary is the tokenizer's"
            )
        from imm_ray.supervised.lm.corpus import load_corpus

        return build_word_tokenizer(load_corpus(corpus).vocab.words)
    return _checkpoint_tokenizer(_checkpoint_path(model))


def _checkpoint_path(model: str) -> Path:
    from imm_ray.supervised.bert.model import PRESETS

    folder = Path(model).expanduser()
    if not folder.is_dir():
        raise ValueError(
            f"model must be a preset ({', '.join(PRESETS)}) or a checkpoint folder; "
            f"{folder} does not exist"
        )
    return folder


def _checkpoint_tokenizer(folder: Path, name: Path | None = None):
    """The tokenizer saved in ``folder``; errors name the checkpoint ``name`` (default:
    ``folder``)."""
    from transformers import AutoTokenizer

    from imm_ray.supervised.bert.tokenizer import check_bert_tokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as err:
        raise ValueError(f"model {name or folder}: no readable tokenizer ({err})") from None
    check_bert_tokenizer(tokenizer)
    return tokenizer


def read_checkpoint(model: str) -> dict[str, bytes]:
    """The files of checkpoint folder ``model`` that :data:`CHECKPOINT_FILES` names, as
    bytes (name → contents)."""
    folder = _checkpoint_path(model)
    return {
        path.name: path.read_bytes()
        for pattern in CHECKPOINT_FILES
        for path in sorted(folder.glob(pattern))
        if path.is_file()
    }


@contextlib.contextmanager
def checkpoint_folder(files: dict[str, bytes]) -> Iterator[Path]:
    """``files`` (:func:`read_checkpoint`) written to a temporary folder, for
    ``from_pretrained``; the folder is removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="imm-ray-checkpoint-") as folder:
        for name, data in files.items():
            (Path(folder) / name).write_bytes(data)
        yield Path(folder)


def restricted_model(tokenizer, corpus: str | Path):
    """``(stream, bigram)``: ``corpus``'s train.txt through ``tokenizer`` and its modified
    Kneser–Ney bigram, over the tokenizer's ids with ``[SEP]`` as ``<eos>``."""
    from imm_ray.restricted.kneser_ney import estimate_kneser_ney
    from imm_ray.supervised.bert.tokenizer import corpus_ids, read_lines
    from imm_ray.supervised.lm.corpus import split_file

    folder = Path(corpus).expanduser()
    if not folder.is_dir():
        raise ValueError(f"corpus folder {folder} does not exist")
    stream = corpus_ids(tokenizer, read_lines(split_file(folder, "train")))
    return stream, estimate_kneser_ney(stream, len(tokenizer), tokenizer.sep_token_id)


def tokenizer_words(tokenizer) -> list[str]:
    """The tokenizer's tokens by id, ``[SEP]`` named ``<eos>`` (the bigram's sentence end)."""
    vocab = tokenizer.get_vocab()
    words = [""] * len(tokenizer)
    for token, i in vocab.items():
        if i < len(words):
            words[i] = token
    words[tokenizer.sep_token_id] = "<eos>"
    return words


def write_bigram(tokenizer, bigram, path: str | Path) -> None:
    """``bigram`` as an ARPA file over the tokenizer's tokens."""
    from imm_ray.restricted.arpa import write_arpa

    write_arpa(bigram, tokenizer_words(tokenizer), path)


def read_bigram(tokenizer, path: str | Path):
    """An ARPA bigram whose vocabulary must be the tokenizer's (else ``ValueError``)."""
    from imm_ray.restricted.arpa import read_arpa

    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(f"bigram file {path} does not exist")
    try:
        model, _ = read_arpa(path, tokenizer_words(tokenizer))
    except ValueError as err:
        raise ValueError(
            f"the bigram's vocabulary differs from the tokenizer's ({len(tokenizer)} ids): {err}"
        ) from None
    return model


def read_inputs(config: FinetuneConfig, restricted: bool | None = None) -> RunInputs:
    """Reads and checks what ``config`` names: the task's splits, the checkpoint's files and
    its tokenizer (for a preset: a tokenizer over the corpus's words) and, with
    ``restricted`` (default: for method imm), the corpus stream and its bigram."""
    from imm_ray.supervised.bert.model import PRESETS
    from imm_ray.supervised.bert.tasks import load_task, task_spec

    if restricted is None:
        restricted = config.method == "imm"
    if restricted and config.corpus is None:
        raise ValueError("method imm needs corpus: the PTB-format folder of the bigram (--corpus)")
    spec = task_spec(config.task)
    splits = load_task(spec, config.data)
    checkpoint = None
    if config.model in PRESETS:
        tokenizer = load_tokenizer(config.model, config.corpus)
    else:
        checkpoint = read_checkpoint(config.model)
        with checkpoint_folder(checkpoint) as folder:
            tokenizer = _checkpoint_tokenizer(folder, Path(config.model).expanduser())
    stream = bigram = None
    if restricted:
        stream, bigram = restricted_model(tokenizer, config.corpus)  # type: ignore[arg-type]
        if config.bigram is not None:
            bigram = read_bigram(tokenizer, config.bigram)
    return RunInputs(spec, splits, tokenizer, checkpoint, stream, bigram)


def prepare_run(config: FinetuneConfig, inputs: RunInputs | None = None) -> Run:
    """The run ``config`` describes, on ``inputs`` (default: :func:`read_inputs` now): its
    model (the checkpoint's weights with new heads drawn from ``config.seed``, or a
    preset's fresh weights), checked against the tokenizer, ``max_length`` and the bigram.
    No training, and no file read when ``inputs`` are given."""
    from transformers import set_seed

    from imm_ray.supervised.bert.imm_branch import check_bigram_vocabulary
    from imm_ray.supervised.bert.model import load_model

    if inputs is None:
        inputs = read_inputs(config)
    imm = config.method == "imm"
    if imm and inputs.bigram is None:
        raise ValueError("method imm needs corpus: the PTB-format folder of the bigram (--corpus)")
    spec, tokenizer = inputs.spec, inputs.tokenizer
    set_seed(config.seed)
    if inputs.checkpoint is None:
        model = load_model(config.model, spec.num_labels, vocab_size=len(tokenizer))
    else:
        with checkpoint_folder(inputs.checkpoint) as folder:
            model = load_model(
                folder, spec.num_labels, len(tokenizer), name=Path(config.model).expanduser()
            )
    if model.config.vocab_size != len(tokenizer):
        raise ValueError(
            f"model {config.model} has {model.config.vocab_size} token ids, its tokenizer "
            f"{len(tokenizer)}"
        )
    if config.max_length > model.config.max_position_embeddings:
        raise ValueError(
            f"max_length must be <= the model's {model.config.max_position_embeddings} "
            f"positions, got {config.max_length}"
        )
    if not imm:
        return Run(config, spec, inputs.splits, tokenizer, model, None, None)
    check_bigram_vocabulary(inputs.bigram, tokenizer, model.config.vocab_size)
    return Run(config, spec, inputs.splits, tokenizer, model, inputs.stream, inputs.bigram)


class _Examples(torch.utils.data.Dataset):
    def __init__(self, encoded: dict[str, list], labels: list[int] | None) -> None:
        self.encoded, self.labels = encoded, labels

    def __len__(self) -> int:
        return len(self.encoded["input_ids"])

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = {key: values[i] for key, values in self.encoded.items()}
        if self.labels is not None:
            item["labels"] = self.labels[i]
        return item


def encode_split(tokenizer, split, max_length: int, limit: int | None = None) -> _Examples:
    """A split as a dataset of tokenized examples (unpadded; the collator pads)."""
    a = split.text_a[:limit]
    b = None if split.text_b is None else split.text_b[:limit]
    encoded = tokenizer(a, b, truncation=True, max_length=max_length)
    labels = None if split.labels is None else split.labels[:limit]
    return _Examples(dict(encoded), labels)


def _progress_callback(progress: Progress):
    from transformers import TrainerCallback

    class ProgressLine(TrainerCallback):
        """The run's steps (a resumed run's ETA counts its own steps only), its losses, and
        a line per epoch with its dev scores."""

        def on_train_begin(self, args, state, control, **kwargs):
            progress.start(state.max_steps, "step", initial=state.global_step)
            self.shown: set[float] = set()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or "loss" not in logs or not state.max_steps:
                return
            terms = ", ".join(
                f"{name} {logs[key]:.3f}"
                for name, key in (("task", "task_loss"), ("mlm", "mlm_loss"), ("imm", "imm_risk"))
                if key in logs
            )
            progress.update(state.global_step, terms)

        def on_train_end(self, args, state, control, **kwargs):
            progress.close()

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            if state.epoch in self.shown:
                return
            self.shown.add(state.epoch)
            shown = ", ".join(
                f"{k.removeprefix('eval_')} {v:.4f}"
                for k, v in (metrics or {}).items()
                if k.startswith("eval_") and k.removeprefix("eval_") in ("mcc", "f1", "accuracy")
            )
            progress.write(f"epoch {state.epoch:.0f}: dev {shown}")

    return ProgressLine()


def warmup_steps(ratio: float, total_steps: int) -> int:
    """The warm-up steps for a warm-up over ``ratio`` of ``total_steps``, rounded up as
    transformers 5 rounds a fractional ``warmup_steps`` (``TrainingArguments.get_warmup_steps``).

    Trainer's arguments get this integer, which means a number of steps on every
    transformers version: a float there means a ratio only from transformers 5 on (4.47
    refuses one, and 4.x's ``warmup_ratio`` is gone from 5). Unlike transformers 5, a
    ratio of exactly 1 means every step, not one.
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"a warm-up ratio must be between 0 and 1, got {ratio}")
    return math.ceil(total_steps * ratio)


def training_arguments(
    config: FinetuneConfig, output_dir: str | Path, save: bool, train_examples: int
):
    """Trainer's arguments; the terms are logged about 20 times a run (every 1–50 steps)."""
    from transformers import TrainingArguments

    steps = math.ceil(train_examples / config.batch_size) * config.epochs

    args = TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=max(config.batch_size, 64),
        learning_rate=config.lr,
        weight_decay=config.weight_decay,
        max_grad_norm=config.clip,
        seed=config.seed,
        eval_strategy="epoch",
        save_strategy="epoch" if save else "no",
        save_total_limit=1 if save else None,
        logging_strategy="steps",
        logging_steps=max(1, min(50, steps // 20)),
        report_to=[],
        disable_tqdm=True,
        use_cpu=config.device == "cpu",
        bf16=config.precision == "bf16",
        fp16=config.precision == "fp16",
        dataloader_num_workers=0,
        remove_unused_columns=False,
    )
    # Trainer's own count of optimizer steps: its batch is the per-device one times the
    # GPUs it spreads a batch over (several GPUs in one trial); no gradient accumulation.
    total = math.ceil(train_examples / args.train_batch_size) * config.epochs
    args.warmup_steps = warmup_steps(config.warmup_ratio, total)
    return args


def finetune(
    run: Run,
    output_dir: str | Path,
    progress: Progress | None = None,
    callbacks: list | None = None,
    save: bool = False,
    resume_from: str | None = None,
) -> dict[str, float]:
    """Trains ``run`` and returns ``{"dev_<metric>", ["test_<metric>"], "train_seconds",
    "steps", "task_loss", "mlm_loss", "imm_risk"}`` (the last three: their final means)."""
    from transformers import DataCollatorWithPadding, PrinterCallback

    from imm_ray.supervised.bert.metrics import score
    from imm_ray.supervised.hf_lm.trainer import IMMTrainer

    config, spec = run.config, run.spec
    metric = spec.metric
    train = encode_split(
        run.tokenizer, run.splits["train"], config.max_length, config.max_train_examples
    )
    dev = encode_split(run.tokenizer, run.splits["dev"], config.max_length)

    def compute_metrics(prediction) -> dict[str, float]:
        predicted = np.asarray(prediction.predictions).argmax(-1).tolist()
        return {metric: score(metric, predicted, list(prediction.label_ids))}

    extra = list(callbacks or [])
    if progress is not None:
        extra.append(_progress_callback(progress))
    logged: dict[str, float] = {}
    from transformers import TrainerCallback

    class KeepTerms(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            for key in ("task_loss", "mlm_loss", "imm_risk"):
                if logs and key in logs:
                    logged[key] = float(logs[key])

    trainer = IMMTrainer(
        model=run.model,
        args=training_arguments(config, output_dir, save, len(train)),
        imm_config=config.imm_config(),
        corpus=run.corpus,
        bigram=run.bigram,
        train_dataset=train,
        eval_dataset=dev,
        processing_class=run.tokenizer,
        data_collator=DataCollatorWithPadding(run.tokenizer),
        compute_metrics=compute_metrics,
        callbacks=[KeepTerms(), *extra],
    )
    # Trainer prints every log dict when tqdm is off; the progress line stands in for it.
    trainer.remove_callback(PrinterCallback)
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.perf_counter() - start
    results = {
        f"dev_{metric}": float(trainer.evaluate(dev)[f"eval_{metric}"]),
        "train_seconds": seconds,
        "steps": float(trainer.state.global_step),
        **logged,
    }
    test = run.splits.get("test")
    if test is not None and test.labels is not None:
        data = encode_split(run.tokenizer, test, config.max_length)
        results[f"test_{metric}"] = float(trainer.evaluate(data)[f"eval_{metric}"])
    return results


def replace(config: FinetuneConfig, **changes: Any) -> FinetuneConfig:
    """``config`` with ``changes`` (None values ignored)."""
    return dataclasses.replace(config, **{k: v for k, v in changes.items() if v is not None})
