"""Checkpoints as a run on a GPU writes them, made on a machine without one.

``torch.save`` records each tensor's device with its storage; a file written on a GPU
holds ``cuda:0`` storages, which ``torch.load`` refuses on a machine without CUDA unless
told where to map them. :func:`saved_as_on_cuda` makes ``torch.save`` record every
storage as a ``cuda:0`` one, so a test can check that such a file resumes on the CPU.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.serialization


def _cuda_tag(storage) -> str | None:
    return "cuda:0" if storage.device.type == "cpu" else None


def _no_deserializer(storage, location: str):
    return None  # torch's own CUDA entry (or map_location) places the storage


@contextlib.contextmanager
def saved_as_on_cuda() -> Iterator[None]:
    """Within the block, ``torch.save`` tags every CPU storage as a ``cuda:0`` one (before
    torch's own taggers: this one's priority is the lowest number)."""
    torch.serialization.register_package(0, _cuda_tag, _no_deserializer)
    try:
        yield
    finally:
        registry = torch.serialization._package_registry
        registry[:] = [entry for entry in registry if entry[1] is not _cuda_tag]


def resave_as_on_cuda(path) -> None:
    """Rewrites the ``torch.save`` file ``path`` as a GPU run would have written it."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    with saved_as_on_cuda():
        torch.save(state, path)
