"""KenLM's ``lmplz``, built by ``scripts/build_lmplz.sh`` (``make test`` runs it first)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def lmplz_path() -> Path:
    """``$IMM_RAY_LMPLZ``, else the build script's cache path."""
    if "IMM_RAY_LMPLZ" in os.environ:
        return Path(os.environ["IMM_RAY_LMPLZ"])
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "imm-ray" / "kenlm" / "bin" / "lmplz"


@pytest.fixture(scope="session")
def lmplz() -> Path:
    """The lmplz binary. Missing: the test fails under CI (``make test`` builds it, so a
    skip would hide a broken build step) and is skipped elsewhere."""
    path = lmplz_path()
    if not os.access(path, os.X_OK):
        message = f"lmplz not found at {path}: run scripts/build_lmplz.sh (or make test)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path
