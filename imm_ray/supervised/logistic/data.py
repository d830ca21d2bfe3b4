"""The logistic-regression toy problem (Section 7.1, Appendix D.1): data and the exact target.

Three features uniform over a cube ``[low, high]³``; the label is the side of a plane,
``y = 1{a·x1 + b·x2 + c·x3 + d > 0}``. The restricted context is x1 and the extended
context (x2, x3). The restricted target P̂(y | x1) is the Bayes predictor on x1 alone,
the fraction of the square slice at x1 on the positive side, computed in closed form:
with ``S = b·x2 + c·x3`` a sum of two independent uniforms, P(y = 1 | x1) = P(S > −(a·x1 + d))
is one minus S's trapezoidal CDF.

Default problem, and why: the cube ``[-1, 1]³`` and ``g = 1.5·x1 + x2 + x3 + 0.25``.
x1 carries the largest coefficient, so the one-feature Bayes predictor is accurate
(≈ 79 % test accuracy) but far from the full model's 100 %: the restricted model knows
something worth matching and cannot replace the full one. The offset d = 0.25 keeps the
classes unbalanced (≈ 58 % positive) and the plane off the origin, so the bias must be
learned too. With these, the baseline climbs from ≈ 64 % at n = 2 to ≈ 97 % at n = 50, the
range of the paper's Figure 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from imm_ray import checks
from imm_ray.checks import ConfigError

#: Lower-quality targets of Appendix D.4: the label mixed with a coin flip at this rate.
QUALITY_MIX = {"high": 0.0, "medium": 0.2, "low": 0.5}


@dataclass(frozen=True)
class Problem:
    """The cube and the linear discriminant g(x) = a·x1 + b·x2 + c·x3 + d."""

    coef: tuple[float, float, float] = (1.5, 1.0, 1.0)
    """(a, b, c)."""
    bias: float = 0.25
    """d."""
    low: float = -1.0
    high: float = 1.0
    """The cube [low, high]³ the features are uniform over."""

    def __post_init__(self) -> None:
        coef = tuple(self.coef)
        if len(coef) != 3 or not all(checks.is_number(c) for c in coef):
            checks.fail("coef", self.coef, "three finite numbers (a, b, c)")
        object.__setattr__(self, "coef", tuple(float(c) for c in coef))
        checks.number("bias", self.bias, allowed="a finite number")
        if (
            not (checks.is_number(self.low) and checks.is_number(self.high))
            or self.low >= self.high
        ):
            raise ConfigError(
                "low",
                f"low and high must be finite numbers with low < high, got {self.low!r}, "
                f"{self.high!r}",
            )

    def sample(
        self, shape: tuple[int, ...], rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """``shape + (3,)`` features uniform over the cube and their ``shape`` labels (0/1)."""
        x = rng.uniform(self.low, self.high, size=(*shape, 3))
        return x, self.label(x)

    def label(self, x: np.ndarray) -> np.ndarray:
        """y = 1{g(x) > 0} for features ``[..., 3]``."""
        g = x @ np.asarray(self.coef) + self.bias
        return (g > 0).astype(np.int64)

    def restricted_bayes(self, x1: np.ndarray | torch.Tensor) -> np.ndarray:
        """P(y = 1 | x1), exactly: the share of the slice {x1} × [low, high]² where g > 0."""
        x1 = np.asarray(x1, dtype=np.float64)
        a, b, c = self.coef
        # S = b·x2 + c·x3: b·x2 is uniform on [p1, p1 + w1], c·x3 on [p2, p2 + w2].
        p1, w1 = min(b * self.low, b * self.high), abs(b) * (self.high - self.low)
        p2, w2 = min(c * self.low, c * self.high), abs(c) * (self.high - self.low)
        threshold = -(a * x1 + self.bias)
        return 1.0 - _uniform_sum_cdf(threshold, p1, w1, p2, w2)

    def target(self, x1: np.ndarray | torch.Tensor, mix: float = 0.0) -> np.ndarray:
        """P̂(y | x1) as ``[..., 2]`` (classes 0, 1), mixed with a coin flip at rate ``mix``."""
        checks.number("target mix", mix, at_least=0, at_most=1)
        p1 = (1.0 - mix) * self.restricted_bayes(x1) + mix * 0.5
        return np.stack((1.0 - p1, p1), axis=-1)


def _uniform_sum_cdf(s: np.ndarray, p1: float, w1: float, p2: float, w2: float) -> np.ndarray:
    """CDF at ``s`` of U[p1, p1 + w1] + U[p2, p2 + w2] (a width may be 0: a point mass)."""
    if w1 == 0 and w2 == 0:
        return (s >= p1 + p2).astype(np.float64)
    if w1 == 0 or w2 == 0:
        start, width = p1 + p2, max(w1, w2)
        return np.clip((s - start) / width, 0.0, 1.0)

    def ramp(z: np.ndarray) -> np.ndarray:
        return np.maximum(z, 0.0) ** 2 / 2.0

    lo = p1 + p2
    cdf = (ramp(s - lo) - ramp(s - lo - w1) - ramp(s - lo - w2) + ramp(s - lo - w1 - w2)) / (
        w1 * w2
    )
    return np.clip(cdf, 0.0, 1.0)
