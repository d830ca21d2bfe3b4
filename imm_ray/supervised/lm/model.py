"""A stateful LSTM language model Q(y | history) (the full model of paper Sec. 7.2).

Embedding → dropout → L LSTM layers (dropout between them) → dropout → linear decoder, as
in Zaremba et al. and Xie et al. (2017). Each layer is its own ``nn.LSTM`` and dropout is
applied explicitly, so a caller can run the model *without* dropout while every module
stays in its training mode: the IMM branch needs gradients without dropout (paper
Sec. 7.2), and cuDNN refuses to back-propagate an RNN that is in eval mode.

The carried state is a tuple ``(h, c)`` of ``[layers, rows, hidden]`` tensors.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from imm_ray import _compat, checks

State = tuple[torch.Tensor, torch.Tensor]

#: Arithmetic of a pass: float32, or bfloat16 autocast (weights, log-probs and the carried
#: state stay float32; matrix products and the LSTM run in bfloat16).
PRECISIONS = ("fp32", "bf16")


def autocast(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager:
    """The context a pass of ``precision`` (:data:`PRECISIONS`) runs in on ``device``."""
    checks.one_of("precision", precision, PRECISIONS)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` multiplies bfloat16 matrices in hardware (a CUDA GPU that supports
    bf16, or a CPU with AVX512-BF16 or AMX), where bf16 products are several times faster
    than float32 ones; elsewhere they are emulated and slower."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def _pack_for_onednn(weight: torch.Tensor, rows_hint: int) -> torch.Tensor | None:
    """``weight`` reordered into oneDNN's blocked layout for products with about
    ``rows_hint`` rows, or None where that is not available (not a CPU, no oneDNN, another
    dtype, a torch other than the one these private ops were tested on,
    :func:`imm_ray._compat.onednn_linear`) or does not reproduce ``F.linear`` on a probe."""
    if weight.device.type != "cpu" or weight.dtype not in (torch.float32, torch.bfloat16):
        return None
    if not _compat.onednn_linear():
        return None
    ops = getattr(torch.ops, "mkldnn", None)
    if not torch.backends.mkldnn.is_available() or ops is None:
        return None
    try:
        packed = ops._reorder_linear_weight(weight, rows_hint)
        probe = torch.linspace(-1, 1, 2 * weight.shape[1], dtype=weight.dtype).view(2, -1)
        got = ops._linear_pointwise(probe, packed, None, "none", [], "")
    except (AttributeError, RuntimeError):
        return None
    want = nn.functional.linear(probe, weight)
    return packed if torch.allclose(got.float(), want.float(), rtol=1e-2, atol=1e-3) else None


class FrozenLinear(nn.Module):
    """A copy of an ``nn.Linear`` for inference only, its weight packed once for oneDNN.

    For a model that is read many times between changes, such as serialized IMM's stale
    snapshot. torch's own ``F.linear`` hands float32 products to MKL, and on this project's
    AMD CPU MKL does not use AVX-512: a ``[400, 128] × [128, 10,000]`` product took
    11.8 ms there and 4.6 ms packed, with the same result; in bfloat16, 2.8 ms and 2.4 ms on
    one thread, 2.6 ms and 1.3 ms on two. Where packing is not available it is ``F.linear``.
    """

    def __init__(self, linear: nn.Linear, rows_hint: int) -> None:
        super().__init__()
        self.weight = linear.weight.detach().clone()
        self.bias = None if linear.bias is None else linear.bias.detach().clone()
        self.packed = _pack_for_onednn(self.weight, rows_hint)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is not None and x.dtype == self.weight.dtype:
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")
        return nn.functional.linear(x, self.weight, self.bias)


class LSTMLanguageModel(nn.Module):
    """Next-token log-probabilities of a stateful multi-layer LSTM."""

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int,
        hidden: int,
        layers: int,
        dropout: float,
        init_scale: float,
    ) -> None:
        super().__init__()
        self.vocab_size, self.hidden, self.layers = vocab_size, hidden, layers
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.rnns = nn.ModuleList(
            nn.LSTM(embed_dim if i == 0 else hidden, hidden, batch_first=True)
            for i in range(layers)
        )
        self.drop = nn.Dropout(dropout)
        self.decoder = nn.Linear(hidden, vocab_size)
        for parameter in self.parameters():
            nn.init.uniform_(parameter, -init_scale, init_scale)

    def init_state(self, rows: int, device: torch.device | str | None = None) -> State:
        """The zero state of ``rows`` streams."""
        weight = self.decoder.weight
        device = device if device is not None else weight.device
        zeros = torch.zeros(self.layers, rows, self.hidden, device=device, dtype=weight.dtype)
        return zeros, zeros.clone()

    def _dropout(self, x: torch.Tensor, dropout: bool) -> torch.Tensor:
        return self.drop(x) if dropout else x

    def logits(
        self, tokens: torch.Tensor, state: State, dropout: bool = True
    ) -> tuple[torch.Tensor, State]:
        """``(logits [rows, steps, V], new state)`` for ``tokens [rows, steps]``, in the
        parameters' dtype (or autocast's); the state comes back in float32 or wider, so it keeps its
        dtype between a mixed-precision batch and a float32 one.

        ``dropout=False`` turns dropout off whatever the training mode (the IMM branch).
        """
        x = self._dropout(self.embedding(tokens), dropout)
        hs, cs = [], []
        for i, rnn in enumerate(self.rnns):
            start = (state[0][i : i + 1].to(x.dtype), state[1][i : i + 1].to(x.dtype))
            x, (h, c) = rnn(x, start)
            x = self._dropout(x, dropout)
            hs.append(h)
            cs.append(c)
        # One [rows·steps, hidden] product: a 3-D input can make matmul expand the weight
        # into a batched product (a copy of rows × the decoder) under autocast.
        logits = self.decoder(x.reshape(-1, x.shape[-1])).view(*x.shape[:-1], -1)
        return logits, (_at_least_float32(torch.cat(hs)), _at_least_float32(torch.cat(cs)))

    def forward(
        self, tokens: torch.Tensor, state: State, dropout: bool = True
    ) -> tuple[torch.Tensor, State]:
        """``(log-probs [rows, steps, V], new state)`` for ``tokens [rows, steps]``; the
        log-probs are float32 whatever the arithmetic (a bf16 log-softmax loses the digits
        that perplexity reads)."""
        logits, state = self.logits(tokens, state, dropout)
        return torch.log_softmax(_at_least_float32(logits), dim=-1), state

    def last_log_probs(
        self, tokens: torch.Tensor, lengths: torch.Tensor, state: State
    ) -> torch.Tensor:
        """log Q(· | history) at the last token of each of N histories, ``[N, V]``, no dropout.

        ``tokens [N, T]`` holds history n in its first ``lengths[n]`` entries (the rest is
        ignored); ``state`` (``[layers, N, hidden]``) is each history's starting state.
        Histories are grouped by length and each group runs as one dense call per layer,
        so the LSTM does exactly ``Σ lengths`` token-steps, in at most T calls whatever N
        is (on CPUs this is about twice as fast as a packed sequence, whose batch shrinks
        step by step). One decoder call scores all N last outputs.
        """
        lengths = lengths.to(tokens.device)
        distinct = torch.unique(lengths).tolist()
        outputs, order = [], []
        for length in distinct:
            index = torch.nonzero(lengths == length).squeeze(1)
            x = self.embedding(tokens[index, :length])
            for i, rnn in enumerate(self.rnns):
                x, _ = rnn(x, (state[0][i : i + 1, index], state[1][i : i + 1, index]))
            outputs.append(x[:, -1])
            order.append(index)
        inverse = torch.empty_like(lengths)
        inverse[torch.cat(order)] = torch.arange(len(lengths), device=lengths.device)
        last = torch.cat(outputs)[inverse]
        return torch.log_softmax(_at_least_float32(self.decoder(last)), dim=-1)


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 if it is in a narrower float (a float64 model stays float64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def detach_state(state: State) -> State:
    """The state with its history cut (truncated back-propagation between batches)."""
    return state[0].detach(), state[1].detach()
