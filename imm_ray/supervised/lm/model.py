"""A stateful LSTM language model Q(y | history) (the full model of paper Sec. 7.2).

Embedding → dropout → L LSTM layers (dropout between them) → dropout → linear decoder, as
in Zaremba et al. and Xie et al. (2017). Each layer is its own ``nn.LSTM`` and dropout is
applied explicitly, so a caller can run the model *without* dropout while every module
stays in its training mode: the IMM branch needs gradients without dropout (paper
Sec. 7.2), and cuDNN refuses to back-propagate an RNN that is in eval mode.

The carried state is a tuple ``(h, c)`` of ``[layers, rows, hidden]`` tensors.
"""

from __future__ import annotations

import torch
from torch import nn

State = tuple[torch.Tensor, torch.Tensor]


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

    def forward(
        self, tokens: torch.Tensor, state: State, dropout: bool = True
    ) -> tuple[torch.Tensor, State]:
        """``(log-probs [rows, steps, V], new state)`` for ``tokens [rows, steps]``.

        ``dropout=False`` turns dropout off whatever the training mode (the IMM branch).
        """
        x = self._dropout(self.embedding(tokens), dropout)
        hs, cs = [], []
        for i, rnn in enumerate(self.rnns):
            x, (h, c) = rnn(x, (state[0][i : i + 1], state[1][i : i + 1]))
            x = self._dropout(x, dropout)
            hs.append(h)
            cs.append(c)
        logits = self.decoder(x)
        return torch.log_softmax(logits, dim=-1), (torch.cat(hs), torch.cat(cs))

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
        return torch.log_softmax(self.decoder(last), dim=-1)


def detach_state(state: State) -> State:
    """The state with its history cut (truncated back-propagation between batches)."""
    return state[0].detach(), state[1].detach()
