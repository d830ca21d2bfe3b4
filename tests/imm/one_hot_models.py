"""The logistic model of the IMM gradient tests (``test_crosstalk.py``, ``test_serialized.py``):
Q(y | x̄, x̃) over one-hot features of a short context x̄ and an extended context x̃, with
random float64 weights."""

from __future__ import annotations

import torch

N_SHORT, N_EXTENDED, N_CLASSES = 3, 4, 3


def make_model(seed: int = 0) -> torch.nn.Linear:
    """A logistic model Q(y | x̄, x̃) over one-hot features of both contexts."""
    generator = torch.Generator().manual_seed(seed)
    model = torch.nn.Linear(N_SHORT + N_EXTENDED, N_CLASSES, dtype=torch.float64)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=torch.float64))
    return model
