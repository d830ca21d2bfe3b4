"""Training an LSTM language model with or without IMM against the Kneser–Ney bigram
(paper Sec. 7.2, App. D.2; Table 1 and Table 5).

Methods (:data:`METHODS`):

- ``none``: cross-entropy with dropout only.
- ``noising``: Kneser–Ney data noising with γ0 (:mod:`~imm_ray.supervised.lm.noising`).
- ``imm``: cross-entropy + λ·IMM. Every ``every``-th batch IMM uses k sampled histories
  per position, the other batches one (App. D.2.2). The two gradients are clipped
  separately, each to ``clip``, then added: ``clip(∇CE) + λ·clip(∇IMM)``.
- ``serialized``: cross-entropy + λ·ĨMM (Algorithm 2) with a stale snapshot refreshed
  every ``refresh_every`` batches. ĨMM is a cross-entropy of the main pass's own outputs,
  so the two terms share one backward pass and one clipping (that is the O(1) point).

IMM starts at the first batch, or with ``imm_start_ppl`` once an epoch ends with the
validation perplexity below it (the public code waited for 90 on PTB).

Training is stateful: the training stream is cut into ``batch_size`` rows, read ``unroll``
tokens at a time with the state carried (and detached) from batch to batch, reset at each
epoch. Every loss term is summed over a batch's unroll steps and averaged over its rows, as
in Zaremba et al.'s and Xie et al.'s code, whose SGD lr 1 and clip 5 the paper uses (a mean
per token would make the same lr an unroll-fold smaller step). SGD's learning rate is
halved when an epoch does not improve validation perplexity. A checkpoint after every
epoch holds everything the next epoch reads (weights, optimizer, learning rate, random
states), so resuming continues exactly.
"""

from __future__ import annotations

import dataclasses
import io
import math
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from imm_ray import checks
from imm_ray._io import write_bytes_atomically
from imm_ray.imm import validate_lambda
from imm_ray.progress import Progress
from imm_ray.restricted.kneser_ney import KneserNeyBigram
from imm_ray.supervised.lm.corpus import Corpus
from imm_ray.supervised.lm.histories import HistorySampler
from imm_ray.supervised.lm.imm_branch import (
    SerializedIMM,
    linear_in_log_probs,
    sampled_imm_backward,
)
from imm_ray.supervised.lm.metrics import batchify, bigram_perplexity, induced_bigram, perplexity
from imm_ray.supervised.lm.model import (
    PRECISIONS,
    LSTMLanguageModel,
    autocast,
    detach_state,
    native_bf16,
)
from imm_ray.supervised.lm.noising import KneserNeyNoiser

METHODS = ("none", "noising", "imm", "serialized")
CHECKPOINT_FILE = "checkpoint.pt"
#: LMConfig fields that say where a run trains, not what it computes: a checkpoint resumes
#: under another value (taken on a GPU, continued on a CPU node).
PLACEMENT_FIELDS = ("device",)


@dataclass(frozen=True)
class LMConfig:
    """One LSTM language-model run. Bad values fail at construction, naming the field."""

    method: str = "none"
    """One of none, noising, imm, serialized."""
    embed_dim: int = 200
    """Word embedding size."""
    hidden: int = 200
    """LSTM units per layer."""
    layers: int = 2
    """LSTM layers."""
    dropout: float = 0.2
    """Dropout on the embeddings, between layers and before the decoder."""
    init_scale: float = 0.1
    """Parameters start uniform in [−init_scale, init_scale]."""
    unroll: int = 35
    """Tokens per batch row (truncated back-propagation length); also the history window."""
    batch_size: int = 20
    """Rows of the training stream read side by side."""
    lr: float = 1.0
    """SGD learning rate at the start."""
    lr_decay: float = 0.5
    """Factor on the learning rate after an epoch that does not improve validation."""
    clip: float = 5.0
    """Gradient-norm clip (for IMM: of each term separately)."""
    epochs: int = 6
    """Training epochs."""
    max_batches: int | None = None
    """Batches per epoch, or None for the whole split; with a limit, successive epochs read
    successive stretches of the training rows, wrapping around."""
    lam: float = 0.2
    """λ, the weight of IMM (imm, serialized)."""
    k: int = 10
    """Histories sampled per position on the k-sample batches (imm)."""
    every: int = 5
    """j: every j-th batch uses k samples, the others 1 (imm)."""
    imm_start_ppl: float | None = None
    """Start IMM once validation perplexity is below this; None: from the first batch."""
    memory_bounded: bool = False
    """Back-propagate the k samples one at a time (imm; for models whose k copies do not fit)."""
    refresh_every: int = 200
    """r: batches between snapshots of the stale model (serialized)."""
    gamma0: float = 0.2
    """γ0 of Kneser–Ney noising (noising)."""
    seed: int = 0
    """Seeds the weights, dropout, noising and history draws."""
    device: str = "cpu"
    """Torch device, e.g. cpu or cuda."""
    precision: str = "fp32"
    """Arithmetic of the training passes: fp32, or bf16 autocast (mixed precision: weights,
    log-probabilities and gradients stay float32). Evaluation always runs in float32."""
    snapshot_precision: str = "auto"
    """Arithmetic of serialized IMM's stale snapshot (a forward pass without gradient):
    fp32, bf16, or auto (bf16 where the device multiplies bf16 in hardware, else fp32)."""

    def __post_init__(self) -> None:
        checks.one_of("method", self.method, METHODS)
        for name in ("embed_dim", "hidden", "layers", "batch_size", "epochs", "k", "every"):
            checks.integer(name, getattr(self, name), 1)
        checks.integer("refresh_every", self.refresh_every, 1)
        checks.integer("unroll", self.unroll, 2)
        checks.integer(
            "max_batches", self.max_batches, 1, optional=True, allowed="an integer >= 1 or None"
        )
        checks.number("dropout", self.dropout, at_least=0, below=1)
        checks.number("lr_decay", self.lr_decay, at_least=0, at_most=1)
        checks.number("gamma0", self.gamma0, at_least=0, at_most=1)
        for name in ("init_scale", "lr", "clip"):
            checks.number(name, getattr(self, name), above=0)
        validate_lambda(self.lam, "lam")
        checks.number(
            "imm_start_ppl",
            self.imm_start_ppl,
            above=1,
            optional=True,
            allowed="a number > 1 or None",
        )
        checks.one_of("precision", self.precision, PRECISIONS)
        checks.one_of("snapshot_precision", self.snapshot_precision, ("auto", *PRECISIONS))
        checks.integer("seed", self.seed, 0)
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError):
            checks.fail("device", self.device, "a torch device such as cpu or cuda")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> LMConfig:
        """A named preset (:data:`PRESETS`) with ``overrides`` (None values are ignored)."""
        checks.one_of("preset", name, PRESETS)
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise ValueError(f"unknown LMConfig fields: {', '.join(unknown)}")
        values = {**PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}}
        return cls(**values)

    @property
    def uses_imm(self) -> bool:
        return self.method in ("imm", "serialized")


#: ``paper``: Xie et al.'s (2017) large model, which the paper builds on (Sec. 7.2): 2 × 1500,
#: dropout 0.65, unroll 35, batch 20, SGD lr 1 halved on a plateau, clip 5 (its epoch count,
#: 40, is ours). ``small``: sized for two CPU cores, 2 × 128, unroll 20, 2 whole epochs (one
#: epoch of the Austen training split without IMM takes about 1.5 minutes on one core; sampled
#: IMM about ten times that), serialized snapshots every 100 batches; see
#: benchmarks/results.md. ``tiny``: for tests.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "embed_dim": 1500,
        "hidden": 1500,
        "layers": 2,
        "dropout": 0.65,
        "init_scale": 0.04,
        "epochs": 40,
    },
    "small": {
        "embed_dim": 128,
        "hidden": 128,
        "layers": 2,
        "dropout": 0.2,
        "unroll": 20,
        "epochs": 2,
        "refresh_every": 100,
    },
    "tiny": {
        "embed_dim": 16,
        "hidden": 16,
        "layers": 1,
        "dropout": 0.0,
        "unroll": 8,
        "batch_size": 4,
        "epochs": 1,
        "k": 3,
        "every": 2,
        "refresh_every": 5,
    },
}


def check_bigram(bigram: KneserNeyBigram, corpus: Corpus) -> None:
    """The target must be over the corpus's ids: same vocabulary size and ``<eos>``."""
    if bigram.vocab_size != len(corpus.vocab) or bigram.eos_id != corpus.vocab.eos_id:
        raise ValueError(
            f"the bigram's vocabulary ({bigram.vocab_size} ids, <eos> = {bigram.eos_id}) differs "
            f"from the corpus's ({len(corpus.vocab)} ids, <eos> = {corpus.vocab.eos_id})"
        )


@dataclass
class EpochTotals:
    """Sums over an epoch's batches: the training loss and the IMM risk, with their counts."""

    loss: float = 0.0
    tokens: int = 0
    imm: float = 0.0
    imm_rows: int = 0


class LMTrainer:
    """An LSTM language model, its optimizer and its IMM machinery, epoch by epoch."""

    def __init__(self, config: LMConfig, corpus: Corpus, bigram: KneserNeyBigram) -> None:
        check_bigram(bigram, corpus)
        self.config, self.corpus = config, corpus
        self.device = torch.device(config.device)
        self.vocab_size = len(corpus.vocab)
        self.eos_id = corpus.vocab.eos_id
        torch.manual_seed(config.seed)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.model = LSTMLanguageModel(
            self.vocab_size,
            config.embed_dim,
            config.hidden,
            config.layers,
            config.dropout,
            config.init_scale,
        ).to(self.device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=config.lr)
        self.bigram = bigram.to(self.device)
        self.train_rows = batchify(corpus.train, config.batch_size)
        if self.train_rows.shape[1] < 2:
            raise ValueError("the training split is too short for one batch")
        self.sampler = (
            HistorySampler(corpus.train, self.vocab_size, config.unroll)
            if config.method == "imm"
            else None
        )
        self.noiser = (
            KneserNeyNoiser(corpus.train, self.vocab_size, self.eos_id, config.gamma0)
            if config.method == "noising"
            else None
        )
        self.epoch = 0
        self.lr = config.lr
        self.best_valid = math.inf
        self.imm_active = config.uses_imm and config.imm_start_ppl is None
        self.snapshot_precision = config.snapshot_precision
        if self.snapshot_precision == "auto":
            self.snapshot_precision = "bf16" if native_bf16(self.device) else "fp32"
        self.history: list[dict[str, float]] = []
        self._serialized: SerializedIMM | None = None

    @property
    def batches_in_split(self) -> int:
        return math.ceil((self.train_rows.shape[1] - 1) / self.config.unroll)

    @property
    def batches_per_epoch(self) -> int:
        full = self.batches_in_split
        return full if self.config.max_batches is None else min(full, self.config.max_batches)

    def _imm_step(self, step: int, inputs: torch.Tensor, state) -> tuple[float, int]:
        config = self.config
        k = config.k if step % config.every == 0 else 1
        target = self.bigram.rows(inputs)
        with autocast(self.device, config.precision):
            return sampled_imm_backward(
                self.model,
                inputs,
                state,
                target,
                self.sampler,  # type: ignore[arg-type]
                k,
                self.generator,
                config.memory_bounded,
            )

    def epoch_steps(self, totals: EpochTotals, progress: Progress | None = None) -> Iterator[None]:
        """The training batches of one epoch, one optimizer step per ``next``, summed into
        ``totals`` (:meth:`train_epoch` runs them all; a benchmark can interleave the steps
        of two trainers so that both see the same machine load)."""
        config, model = self.config, self.model
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        data = self.train_rows
        if self.noiser is not None:
            data = self.noiser.noise(data, self.generator)
        data = data.to(self.device)
        serialized = None
        if config.method == "serialized" and self.imm_active:
            # One per trainer: its V × V table's pages, once written, serve every epoch (a
            # new table would be faulted in again, page by page). Step 0 refreshes it.
            if self._serialized is None:
                self._serialized = SerializedIMM(
                    config.refresh_every, self.vocab_size, self.snapshot_precision
                )
            serialized = self._serialized
        params = [p for p in model.parameters()]
        model.train()
        state = model.init_state(config.batch_size)
        if progress is not None:
            progress.start(self.batches_per_epoch, f"epoch {self.epoch + 1}/{config.epochs} batch")
        try:
            yield from self._steps(data, params, state, serialized, totals, progress)
        finally:
            if progress is not None:
                progress.close()  # also when the epoch is stopped (an interrupt)

    def _steps(
        self,
        data: torch.Tensor,
        params: list[torch.nn.Parameter],
        state: Any,
        serialized: SerializedIMM | None,
        totals: EpochTotals,
        progress: Progress | None,
    ) -> Iterator[None]:
        """:meth:`epoch_steps`'s batches, its epoch set up."""
        config, model = self.config, self.model
        batches = self.batches_per_epoch
        first = (self.epoch * batches) % self.batches_in_split
        for step in range(batches):
            offset = ((first + step) % self.batches_in_split) * config.unroll
            steps = min(config.unroll, data.shape[1] - 1 - offset)
            inputs = data[:, offset : offset + steps]
            targets = data[:, offset + 1 : offset + 1 + steps]
            carried = state
            with autocast(self.device, config.precision):
                log_probs, state = model(inputs, carried)
            state = detach_state(state)
            # Losses are summed over the unroll steps and averaged over the rows (the
            # convention of Zaremba et al.'s and Xie et al.'s code, for which SGD lr 1 and
            # clip 5 are the paper's settings); perplexities use the mean per token.
            if serialized is None:
                nll = -log_probs.gather(-1, targets.unsqueeze(-1)).mean()
                loss = nll * steps
            else:
                # CE + λ·ĨMM as one soft-target cross-entropy: its gradient in the log-probs,
                # −(one-hot targets + λ·ĨMM's weights) / rows, built in one buffer and handed
                # to autograd as it is (one pass to form, none to back-propagate).
                per_row = -1.0 / targets.shape[0]
                gradient = serialized.corrected_target_(
                    model, step, inputs, carried, self.bigram, scale=config.lam * per_row
                )
                rows = targets.numel()
                gradient.scatter_add_(
                    1, targets.reshape(-1, 1), gradient.new_full((rows, 1), per_row)
                )
                loss = linear_in_log_probs(log_probs, gradient)
                with torch.no_grad():
                    nll = -log_probs.gather(-1, targets.unsqueeze(-1)).mean()
                if config.lam > 0:
                    totals.imm += float(loss.detach() / steps - nll) / config.lam * rows
                    totals.imm_rows += rows
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, config.clip)
            if config.method == "imm" and self.imm_active and config.lam > 0:
                main = [p.grad.clone() if p.grad is not None else None for p in params]
                self.optimizer.zero_grad(set_to_none=True)
                risk, rows = self._imm_step(step, inputs, carried)
                totals.imm += risk * rows
                totals.imm_rows += rows
                for p in params:  # the risk is a mean per position: sum it over the steps
                    if p.grad is not None:
                        p.grad.mul_(steps)
                torch.nn.utils.clip_grad_norm_(params, config.clip)
                for p, g in zip(params, main, strict=True):
                    if p.grad is None:
                        p.grad = g
                    elif g is not None:
                        p.grad.mul_(config.lam).add_(g)
            self.optimizer.step()
            totals.loss += float(nll.detach()) * targets.numel()
            totals.tokens += targets.numel()
            if progress is not None and (step + 1) % 20 == 0:
                progress.update(step + 1, f"train ppl {math.exp(totals.loss / totals.tokens):.1f}")
            yield

    def train_epoch(
        self, progress: Progress | None = None, validate: bool = True
    ) -> dict[str, float]:
        """One epoch of training followed by validation; returns its metrics.

        ``validate=False`` skips validation, and with it the learning-rate schedule and
        the IMM start (for benchmarks: ``epoch_seconds`` is the training loop alone).
        """
        config, model = self.config, self.model
        totals = EpochTotals()
        start = time.perf_counter()
        for _ in self.epoch_steps(totals, progress):
            pass
        seconds = time.perf_counter() - start
        valid = math.nan
        self.epoch += 1
        started = False
        if validate:
            valid = perplexity(
                model, self.corpus.valid, self.eos_id, rows=config.batch_size, unroll=config.unroll
            )
            if valid < self.best_valid:
                self.best_valid = valid
            else:
                self.lr *= config.lr_decay
            if config.uses_imm and not self.imm_active and valid < config.imm_start_ppl:  # type: ignore[operator]
                self.imm_active = started = True
        metrics = {
            "epoch": self.epoch,
            "train_ppl": math.exp(totals.loss / totals.tokens),
            "valid_ppl": valid,
            "imm_risk": totals.imm / totals.imm_rows if totals.imm_rows else math.nan,
            "lr": self.lr,
            "epoch_seconds": seconds,
            "imm_started": float(started),
        }
        self.history.append(metrics)
        return metrics

    def evaluate(self, induced: bool = True) -> dict[str, float]:
        """Valid and test perplexity and, with ``induced``, the induced-bigram perplexity of
        every split next to the Kneser–Ney bigram's (Table 5)."""
        config, corpus = self.config, self.corpus
        self.model.eval()
        out = {
            "valid_ppl": perplexity(
                self.model, corpus.valid, self.eos_id, config.batch_size, config.unroll
            ),
            "test_ppl": perplexity(self.model, corpus.test, self.eos_id, 1, config.unroll),
        }
        if induced:
            table = induced_bigram(
                self.model, corpus.train, self.eos_id, config.batch_size, config.unroll
            )
            bigram = self.bigram.to("cpu")
            for split in ("train", "valid", "test"):
                ids = corpus.split(split)
                out[f"induced_{split}_ppl"] = bigram_perplexity(table, ids, self.eos_id)
                out[f"kn_{split}_ppl"] = bigram.perplexity(ids)
        self.model.train()
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "config": dataclasses.asdict(self.config),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "lr": self.lr,
            "best_valid": self.best_valid,
            "imm_active": self.imm_active,
            "history": self.history,
            "torch_rng": torch.get_rng_state(),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any], free: Collection[str] = ()) -> None:
        """Restores a :meth:`state_dict`; its configuration must be this one's, except for
        ``epochs`` (a longer run continues the same training; fewer than the checkpoint has
        trained is refused), the device (:data:`PLACEMENT_FIELDS`): its tensors may be
        on any device, and the fields named in ``free`` (a search's ``("lam",)``: a member
        of a population continues another's checkpoint with its own λ). This trainer's
        configuration stays in effect: the next epoch trains with its values of them."""
        ours = dataclasses.asdict(self.config)
        free = ("epochs", *PLACEMENT_FIELDS, *free)
        changed = sorted(
            k for k, v in ours.items() if k not in free and state["config"].get(k) != v
        )
        if changed:
            raise ValueError(
                "the checkpoint was trained with another configuration (differs in "
                f"{', '.join(changed)})"
            )
        if state["epoch"] > self.config.epochs:  # it would train none, and say nothing
            raise ValueError(
                f"epochs must be at least the {state['epoch']} the checkpoint has trained "
                f"to continue it, got {self.config.epochs}"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch, self.lr = state["epoch"], state["lr"]
        self.best_valid, self.imm_active = state["best_valid"], state["imm_active"]
        self.history = list(state["history"])
        torch.set_rng_state(state["torch_rng"])
        self.generator.set_state(state["generator"])

    def save(self, folder: str | Path) -> Path:
        """Writes ``folder/checkpoint.pt`` atomically (:mod:`imm_ray._io`), making the folder."""
        path = Path(folder) / CHECKPOINT_FILE
        buffer = io.BytesIO()
        torch.save(self.state_dict(), buffer)
        write_bytes_atomically(path, buffer.getvalue())
        return path

    def restore(self, folder: str | Path, free: Collection[str] = ()) -> None:
        """Loads ``folder/checkpoint.pt`` (written by :meth:`save`, on any device); ``free``
        as for :meth:`load_state_dict`."""
        path = Path(folder) / CHECKPOINT_FILE
        if not path.is_file():
            raise ValueError(f"no checkpoint at {path}")
        # Onto the CPU first: the RNG states must stay CPU tensors, and loading the model's
        # and the optimizer's state moves theirs onto this trainer's device.
        self.load_state_dict(torch.load(path, map_location="cpu", weights_only=False), free)


def train_lm(
    config: LMConfig,
    corpus: Corpus,
    bigram: KneserNeyBigram,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    progress: Progress | None = None,
    on_epoch: Callable[[LMTrainer, dict[str, float]], None] | None = None,
) -> tuple[LMTrainer, dict[str, float]]:
    """Trains ``config.epochs`` epochs (continuing a checkpoint with ``resume``), saving a
    checkpoint after each; returns the trainer and its final :meth:`LMTrainer.evaluate`."""
    trainer = LMTrainer(config, corpus, bigram)
    if resume:
        if checkpoint_dir is None:
            raise ValueError("resume needs a checkpoint folder")
        trainer.restore(checkpoint_dir)
    while trainer.epoch < config.epochs:
        metrics = trainer.train_epoch(progress)
        if progress is not None:
            progress.write(
                f"epoch {trainer.epoch}/{config.epochs}: train ppl {metrics['train_ppl']:.1f}, "
                f"valid ppl {metrics['valid_ppl']:.1f}, {metrics['epoch_seconds']:.0f} s"
            )
        if checkpoint_dir is not None:
            trainer.save(checkpoint_dir)
        if on_epoch is not None:
            on_epoch(trainer, metrics)
    return trainer, trainer.evaluate()
