"""The IMM branch of an LSTM language model: sampled IMM (Eq. (12)) and serialized IMM
(Eq. (13), Algorithm 2), on top of :mod:`imm_ray.imm`.

**Sampled.** For the position i of row b, whose input is x̄ = ``inputs[b, i]``, k windows
are drawn from extend(x̄) (:class:`~imm_ray.supervised.lm.histories.HistorySampler`). Each
window's last i + 1 tokens run from the state the primary branch carried into this batch
for row b, detached and unchanged, without dropout; the output after the last of them
(which is x̄) is Q(· | x̄, x̃ᵢ). ``imm_loss`` averages the k softmaxes into Q̂(· | x̄) by
``logsumexp`` and scores −Σ_y P̂(y | x̄) log Q̂(y | x̄), so autograd gives the exact
crosstalk gradient (Eq. (20)). All B·L·k histories go through the LSTM in one batched
call, grouped by length
(:meth:`~imm_ray.supervised.lm.model.LSTMLanguageModel.last_log_probs`); the
memory-bounded mode instead runs the B·L histories of one sample at a time
(:func:`~imm_ray.imm.imm_backward_memory_bounded`).

**Serialized.** A stale snapshot Q† (:class:`~imm_ray.imm.StaleSnapshot`, refreshed every
r batches) reads the same batches with its own carried state. Its induced model Q̂†(· | x̄)
is the mean of its predictions at every position with input x̄ since the last refresh
(Eq. (6) over the stream read so far, the current batch included), and the main
pass's log-probs are trained against the corrected target Q†/Q̂† · P̂ (Eq. (13)).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from imm_ray import checks
from imm_ray.imm import StaleSnapshot, imm_backward_memory_bounded, imm_loss
from imm_ray.restricted.kneser_ney import KneserNeyBigram
from imm_ray.supervised.lm.histories import HistorySampler
from imm_ray.supervised.lm.model import PRECISIONS, FrozenLinear, LSTMLanguageModel, State


def history_tokens(
    sampler: HistorySampler, ends: torch.Tensor, steps: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(tokens [B, L, k, L], lengths [B, L, k])`` of the histories of ``ends [B, L, k]``.

    Position i's history is its window's last i + 1 tokens, left-aligned (entries past
    the length repeat the window's last token and are never read).
    """
    if steps > sampler.unroll:
        raise ValueError(f"a batch of {steps} steps needs windows of >= {steps} tokens")
    windows = sampler.windows(ends)  # [B, L, k, unroll]
    position = torch.arange(steps).view(1, steps, 1, 1)
    column = torch.arange(steps).view(1, 1, 1, steps)
    index = (sampler.unroll - 1 - position + column).clamp(max=sampler.unroll - 1)
    tokens = torch.gather(windows, 3, index.expand(*ends.shape, steps))
    lengths = (position[..., 0] + 1).expand(ends.shape)
    return tokens, lengths


def _repeat_state(state: State, per_row: int) -> State:
    """Row b's state repeated ``per_row`` times, as ``[layers, rows·per_row, hidden]``."""
    return tuple(s.detach().repeat_interleave(per_row, dim=1) for s in state)  # type: ignore[return-value]


def sampled_imm_backward(
    model: LSTMLanguageModel,
    inputs: torch.Tensor,
    state: State,
    target: torch.Tensor,
    sampler: HistorySampler,
    k: int,
    generator: torch.Generator | None = None,
    memory_bounded: bool = False,
) -> tuple[float, int]:
    """Accumulates ∇ IMM into ``.grad`` for the batch ``inputs [B, L]``; ``(risk, rows)``.

    ``state`` is the state carried into the batch (read, never changed); ``target``
    ``[B, L, V]`` is P̂(· | inputs). Positions whose input has no window (extend(x̄) empty)
    are left out; the risk is the mean over the others (0 and 0 rows when none is left).
    """
    rows, steps = inputs.shape
    device = inputs.device
    ends = sampler.sample_ends(inputs.cpu(), k, generator)
    tokens, lengths = history_tokens(sampler, ends, steps)
    keep = sampler.has_history(inputs.cpu()).reshape(-1)
    count = int(keep.sum())
    if count == 0:
        return 0.0, 0
    # [B·L, k, L] histories of the kept positions and their starting rows.
    tokens = tokens.reshape(rows * steps, k, steps)[keep].to(device)
    lengths = lengths.reshape(rows * steps, k)[keep]
    row_of = torch.arange(rows).repeat_interleave(steps)[keep].to(device)
    target = target.reshape(rows * steps, -1)[keep.to(device)]
    start = tuple(s.detach()[:, row_of] for s in state)

    def member(i: int) -> torch.Tensor:
        return model.last_log_probs(tokens[:, i], lengths[:, i], start)  # type: ignore[arg-type]

    if memory_bounded:
        return float(imm_backward_memory_bounded(member, k, target)), count
    all_start = _repeat_state(start, k)  # type: ignore[arg-type]
    members = model.last_log_probs(tokens.reshape(count * k, steps), lengths.reshape(-1), all_start)
    risk = imm_loss(members.view(count, k, -1), target)
    risk.backward()
    return float(risk.detach()), count


class SerializedIMM:
    """The stale snapshot Q†, its carried state and its running induced model Q̂†.

    ``precision`` is the arithmetic of the snapshot's forward pass: ``"fp32"``, or ``"bf16"``
    (the snapshot is a bfloat16 copy; its probabilities are float32). The correction needs no
    more: Q̂† is the running mean of the same predictions Q† that the correction divides,
    so the correction averages to 1 over the rows of a context whatever their rounding.

    Q̂†'s sums live in a pool of rows, one per context seen since the refresh, handed out
    in the order the contexts appear (``slots`` maps a context to its row, −1 if unseen).
    The pool is allocated once, uninitialized, for all V contexts; a refresh only forgets
    the slots, and the next window's contexts reuse the first rows. So the pages written
    are those of the most contexts one window has seen, not of every context the run has
    seen, and a new row is set by one contiguous fill: on this project's VM the first
    touch of a page (a fault) costs more than the arithmetic on it, and ``torch.zeros`` of
    the whole V × V table writes every page (0.14 s for V = 10,000).
    """

    def __init__(self, refresh_every: int, vocab_size: int, precision: str = "fp32") -> None:
        checks.one_of("precision", precision, PRECISIONS)
        self.snapshot = StaleSnapshot(refresh_every)
        self.vocab_size = vocab_size
        self.precision = precision
        self.state: State | None = None
        self.sums: torch.Tensor | None = None
        self.counts: torch.Tensor | None = None
        self.slots: torch.Tensor | None = None
        self.used = 0
        self.dtype = torch.float32

    def _reset_induced(self, device: torch.device) -> None:
        v = self.vocab_size
        if self.sums is None or self.sums.dtype != self.dtype or self.sums.device != device:
            self.sums = torch.empty(v, v, device=device, dtype=self.dtype)
            self.counts = torch.empty(v, device=device, dtype=self.dtype)
            self.slots = torch.empty(v, device=device, dtype=torch.int64)
        self.slots.fill_(-1)  # type: ignore[union-attr]
        self.used = 0

    def _slots_of(self, contexts: torch.Tensor) -> torch.Tensor:
        """The pool rows of distinct ``contexts``; unseen ones get the next free rows, set
        to the smallest normal number (so that sums > 0 everywhere, and a Q† that
        underflows to 0 gets the weight 0 / sums = 0; its bias on Q̂† is below 1e-38)."""
        slots, sums, counts = self.slots, self.sums, self.counts
        rows = slots.index_select(0, contexts)  # type: ignore[union-attr]
        unseen = rows < 0
        new = contexts[unseen]
        if len(new):
            first, self.used = self.used, self.used + len(new)
            fresh = torch.arange(first, self.used, device=contexts.device)
            slots.index_copy_(0, new, fresh)  # type: ignore[union-attr]
            rows[unseen] = fresh
            sums[first : self.used].fill_(torch.finfo(self.dtype).tiny)  # type: ignore[index]
            counts[first : self.used].zero_()  # type: ignore[index]
        return rows

    def corrected_target_(
        self,
        model: LSTMLanguageModel,
        step: int,
        inputs: torch.Tensor,
        state: State,
        target_rows: KneserNeyBigram | Callable[[torch.Tensor], torch.Tensor],
        scale: float = 1.0,
    ) -> torch.Tensor:
        """``scale`` times the weights Q†(y | x_t) / Q̂†(y | x̄_t) · P̂(y | x̄_t) of ĨMM
        (Algorithm 2, line 14) at every position of ``inputs [B, L]``, as ``[B·L, V]``,
        without gradient.

        ``target_rows`` maps context ids ``[U]`` to P̂(· | x̄) ``[U, V]`` (a bigram's
        ``rows``), or is a :class:`KneserNeyBigram`, whose ``rows_over_`` forms the factor
        in fewer passes; it is asked for each distinct context of the batch once, and the factor
        ``scale · P̂ / Q̂†`` is formed per context, so that only the snapshot's predictions
        and the result are ``B·L × V`` (a caller sets ``scale`` to λ, or to the gradient's
        −λ / rows, see :func:`linear_in_log_probs`). ĨMM of the main pass's log-probs is
        then ``−Σ_y weights · log Q``. ``step`` counts batches (a refresh when
        ``step % r == 0``); ``state`` is the primary branch's state carried into this batch,
        which a fresh snapshot starts from.
        """
        v = self.vocab_size
        with torch.no_grad():
            if self.snapshot.maybe_refresh(model, step):
                snapshot = self.snapshot.module
                if self.precision == "bf16":
                    # A bf16 copy rather than autocast: no weight casts on every batch.
                    snapshot.to(torch.bfloat16)  # type: ignore[union-attr]
                # Frozen for r batches: its decoder's weight is packed once per refresh.
                snapshot.decoder = FrozenLinear(snapshot.decoder, inputs.numel())  # type: ignore[union-attr]
                self.state = tuple(s.detach().clone() for s in state)  # type: ignore[assignment]
                self.dtype = torch.promote_types(model.decoder.weight.dtype, torch.float32)
                self._reset_induced(inputs.device)
            logits, self.state = self.snapshot.module.logits(inputs, self.state, dropout=False)  # type: ignore[union-attr]
            stale = torch.softmax(logits.reshape(-1, v), dim=-1, dtype=self.dtype)  # Q†(· | x_t)
            return self.weights_(stale, inputs.reshape(-1), target_rows, scale)

    def weights_(
        self,
        stale: torch.Tensor,
        flat: torch.Tensor,
        target_rows: KneserNeyBigram | Callable[[torch.Tensor], torch.Tensor],
        scale: float,
    ) -> torch.Tensor:
        """Adds the snapshot's predictions ``stale [N, V]`` (Q†(· | x_t), in ``self.dtype``)
        at the positions whose inputs are ``flat [N]`` to Q̂†, and returns ``scale`` ·
        Q†/Q̂† · P̂ at each, ``[N, V]``, written over ``stale``."""
        v = self.vocab_size
        with torch.no_grad():
            contexts, position_context = torch.unique(flat, return_inverse=True)
            rows = self._slots_of(contexts)
            sums, counts = self.sums, self.counts
            at = rows.index_select(0, position_context)
            sums.index_add_(0, at, stale)  # type: ignore[union-attr]
            counts.index_add_(0, at, torch.ones_like(flat, dtype=self.dtype))  # type: ignore[union-attr]
            # Per context: scale · P̂(y | x̄) / Q̂†(y | x̄), Q̂† = sums[x̄] / counts[x̄].
            factor = sums.index_select(0, rows)  # type: ignore[union-attr]
            row_scale = counts.index_select(0, rows) * scale  # type: ignore[union-attr]
            if isinstance(target_rows, KneserNeyBigram):
                factor = target_rows.rows_over_(contexts, factor, row_scale)
            else:
                targets = target_rows(contexts).reshape(-1, v).to(self.dtype)
                factor = targets.mul_(row_scale[:, None]).div_(factor)
            return stale.mul_(factor.index_select(0, position_context))


class _LinearInLogProbs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, log_probs: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(gradient)
        return torch.dot(gradient.reshape(-1), log_probs.reshape(-1))

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        (gradient,) = ctx.saved_tensors
        # ``loss.backward()`` passes 1: the gradient goes on as it is, with no pass over it
        # (checked on CPUs only, where reading the number costs no device sync).
        if grad.device.type == "cpu" and float(grad) == 1.0:
            return gradient, None
        return gradient * grad, None


def linear_in_log_probs(log_probs: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """The loss ``Σ gradient · log_probs``, differentiable in ``log_probs`` only, whose
    gradient in ``log_probs`` is ``gradient`` (as many numbers, no gradient of its own).

    A soft-target cross-entropy ``−Σ w · log_probs / rows`` is this with
    ``gradient = −w / rows``; a caller that builds ``w`` scaled so hands its memory to
    autograd as the gradient, and the backward pass makes no ``B·L × V`` tensor and no pass
    of its own when the loss is back-propagated with 1, as ``loss.backward()`` does (with
    another factor it makes a scaled copy; the buffer is never written).
    """
    if gradient.numel() != log_probs.numel():
        raise ValueError(
            f"gradient must have as many numbers as log_probs ({log_probs.numel()}), "
            f"got {gradient.numel()}"
        )
    return _LinearInLogProbs.apply(log_probs, gradient.detach().reshape(log_probs.shape))
