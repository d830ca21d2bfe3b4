"""IMM within BERT's MLM loss (App. D.2.2): the induced model of a bidirectional encoder
made causal by masking, matched against the Kneser–Ney bigram.

At position t of a fine-tuning sentence (a word: not ``[CLS]``, ``[SEP]`` or padding), the
short context is the previous token x̄ = ``input_ids[t − 1]`` (``[CLS]`` and ``[SEP]`` mean
"a sentence starts here", the bigram's ``[SEP]`` context). Its histories are k prefixes
drawn uniformly from the corpus that end in x̄ (Eq. (12)): the windows of
:class:`~imm_ray.supervised.lm.histories.HistorySampler` over the corpus's id stream. Each
history is run as one BERT input of the sentence's own length n, in which

- position 0 is ``[CLS]`` and positions 1 … t − 1 are the window's last t − 1 tokens (the
  last of them is x̄; for t = 1 the history is ``[CLS]`` alone);
- the predicted position t *and every later one* up to n − 1 are ``[MASK]``, so BERT sees
  the past alone, as a causal model would (the paper: "we mask that word and all future
  words"); positions from n on are padding outside the attention mask;

and BERT's MLM prediction at t is Q(· | x̄, x̃ᵢ). :func:`~imm_ray.imm.imm_loss` averages the
k softmaxes into Q̂(· | x̄) by ``logsumexp`` and scores −Σ_y P̂_KN(y | x̄) log Q̂(y | x̄), so
autograd gives the exact crosstalk gradient (Eq. (20)). All histories of a batch (positions
× k) go through the encoder in one call; the vocabulary head runs at the predicted
positions only. Like the LSTM's IMM branch, this one runs without dropout.

``positions`` picks how many word positions of each sentence carry IMM: ``None`` (the
default, the paper's "each location") uses all of them; a number draws that many per
sentence uniformly without replacement, which bounds the cost (k · positions encoder rows
per sentence instead of k · n) on small machines.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from imm_ray.imm import imm_loss
from imm_ray.restricted.kneser_ney import KneserNeyBigram
from imm_ray.supervised.bert.tokenizer import check_bert_tokenizer
from imm_ray.supervised.lm.histories import HistorySampler


def check_bigram_vocabulary(bigram: KneserNeyBigram, tokenizer, vocab_size: int) -> None:
    """The target must be over the model's token ids: same size, ``[SEP]`` as ``<eos>``."""
    if bigram.vocab_size != vocab_size or bigram.eos_id != tokenizer.sep_token_id:
        raise ValueError(
            f"the bigram's vocabulary ({bigram.vocab_size} ids, <eos> = {bigram.eos_id}) differs "
            f"from the tokenizer's ({vocab_size} ids, [SEP] = {tokenizer.sep_token_id}): "
            "estimate the bigram on the corpus read through the model's own tokenizer"
        )


@dataclass(frozen=True)
class HistoryBatch:
    """The encoder inputs of N positions × k histories, member-major within a position."""

    input_ids: torch.Tensor
    """``[N·k, L]``: row ``j·k + i`` is history i of position j."""
    attention_mask: torch.Tensor
    """``[N·k, L]``: 1 on the sentence's n positions, 0 on its padding."""
    predict_mask: torch.Tensor
    """``[N·k, L]`` bool: True at the predicted position t of each row, nowhere else."""
    contexts: torch.Tensor
    """``[N]``: x̄ of each position as a bigram context (``[CLS]`` read as ``[SEP]``)."""
    rows: torch.Tensor
    """``[N]``: the batch row of each position."""
    positions: torch.Tensor
    """``[N]``: t of each position."""


class BertHistories:
    """extend(x̄) over a corpus's id stream, and the masked encoder inputs of the histories."""

    def __init__(self, stream: np.ndarray, tokenizer, vocab_size: int, max_length: int) -> None:
        check_bert_tokenizer(tokenizer)
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {max_length}")
        self.cls, self.sep = tokenizer.cls_token_id, tokenizer.sep_token_id
        self.mask, self.pad = tokenizer.mask_token_id, tokenizer.pad_token_id
        self.max_length = max_length
        stream = np.asarray(stream, dtype=np.int64)
        if len(stream) and (stream.min() < 0 or stream.max() >= vocab_size):
            raise ValueError(f"the corpus stream must hold ids in [0, {vocab_size})")
        # A history of position t <= max_length − 1 takes t − 1 tokens of its window.
        self.sampler = HistorySampler(stream, vocab_size, max(max_length - 2, 1))

    def contexts(self, input_ids: torch.Tensor) -> torch.Tensor:
        """x̄ of every position, ``[B, L]`` (position 0 gets ``[SEP]``, a sentence start)."""
        previous = torch.full_like(input_ids, self.sep)
        previous[:, 1:] = input_ids[:, :-1]
        return torch.where(previous == self.cls, torch.full_like(previous, self.sep), previous)

    def eligible(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` bool: word positions t >= 1 whose x̄ has at least one history."""
        special = (input_ids == self.cls) | (input_ids == self.sep) | (input_ids == self.pad)
        words = (attention_mask > 0) & ~special
        words[:, 0] = False
        return words & self.sampler.has_history(self.contexts(input_ids))

    def choose(
        self,
        eligible: torch.Tensor,
        positions: int | None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Up to ``positions`` eligible positions per row, uniformly (None: all)."""
        if positions is None:
            return eligible
        scores = torch.rand(eligible.shape, generator=generator)
        scores = torch.where(eligible, scores, torch.full_like(scores, -1.0))
        top = scores.topk(min(positions, eligible.shape[1]), dim=1).indices
        chosen = torch.zeros_like(eligible)
        chosen.scatter_(1, top, True)
        return chosen & eligible

    def build(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        chosen: torch.Tensor,
        k: int,
        generator: torch.Generator | None = None,
    ) -> HistoryBatch:
        """The k histories of every ``chosen`` position of a batch (all on the CPU)."""
        input_ids, attention_mask, chosen = input_ids.cpu(), attention_mask.cpu(), chosen.cpu()
        length = input_ids.shape[1]
        if length > self.max_length:
            raise ValueError(f"a batch of {length} tokens exceeds max_length {self.max_length}")
        rows, positions = chosen.nonzero(as_tuple=True)
        contexts = self.contexts(input_ids)[rows, positions]
        n = attention_mask.sum(dim=1)[rows]
        ends = self.sampler.sample_ends(contexts, k, generator)  # [N, k]
        windows = self.sampler.windows(ends)  # [N, k, W]
        width = windows.shape[-1]
        column = torch.arange(length).view(1, 1, length)
        t = positions.view(-1, 1, 1)
        # Column c in 1 … t − 1 holds the window's token W − t + c (c = t − 1: its last, x̄).
        index = (width - t + column).clamp(0, width - 1).expand(-1, k, -1)
        tokens = torch.gather(windows, 2, index)
        tokens = torch.where(column < t, tokens, torch.full_like(tokens, self.mask))
        tokens[:, :, 0] = self.cls
        inside = column < n.view(-1, 1, 1)
        tokens = torch.where(inside, tokens, torch.full_like(tokens, self.pad))
        predict = (column == t).expand(-1, k, -1)
        count = len(rows)
        return HistoryBatch(
            input_ids=tokens.reshape(count * k, length),
            attention_mask=inside.expand(-1, k, -1).reshape(count * k, length).long(),
            predict_mask=predict.reshape(count * k, length),
            contexts=contexts,
            rows=rows,
            positions=positions,
        )


def runs_head_at_positions(model: torch.nn.Module) -> bool:
    """Whether ``model`` (or the model it wraps) runs its vocabulary head at chosen
    positions alone: ``forward(..., head="mlm", predict_mask=...)``, as
    :class:`~imm_ray.supervised.bert.model.BertForMaskedLMAndClassification` does."""
    forward = getattr(model, "module", model).forward
    return "predict_mask" in inspect.signature(forward).parameters


@contextlib.contextmanager
def _without_dropout(model: torch.nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def imm_risk(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    histories: BertHistories,
    bigram: KneserNeyBigram,
    k: int,
    positions: int | None = None,
    generator: torch.Generator | None = None,
    token_types: bool = True,
) -> tuple[torch.Tensor, int] | None:
    """``(IMM risk, positions)`` of a batch, the risk a mean over positions with gradient;
    None when no position of the batch has a history.

    ``model`` is a :class:`~imm_ray.supervised.bert.model.BertForMaskedLMAndClassification`
    or another model with its ``forward(..., head="mlm", predict_mask=...)`` (its
    vocabulary head run at the predicted positions alone) or any masked LM of
    ``transformers`` (its logits read there; ``token_types``: whether its ``forward``
    takes ``token_type_ids``), or a wrapper of one; ``bigram`` lives on any device, its
    rows move to the model's.
    """

    chosen = histories.choose(
        histories.eligible(input_ids.cpu(), attention_mask.cpu()), positions, generator
    )
    if not bool(chosen.any()):
        return None
    batch = histories.build(input_ids, attention_mask, chosen, k, generator)
    device = input_ids.device
    encoded = {
        "input_ids": batch.input_ids.to(device),
        "attention_mask": batch.attention_mask.to(device),
    }
    if token_types:
        encoded["token_type_ids"] = torch.zeros_like(batch.input_ids, device=device)
    predict = batch.predict_mask.to(device)
    with _without_dropout(model):
        if runs_head_at_positions(model):
            logits = model(**encoded, head="mlm", predict_mask=predict).logits
        else:
            logits = model(**encoded).logits[predict]
    count = len(batch.rows)
    members = torch.log_softmax(logits.float(), dim=-1).view(count, k, -1)
    target = bigram.rows(batch.contexts.to(bigram.unigram.device)).to(device)
    return imm_loss(members, target), count
