"""Logistic regression with a one-feature Bayes target (Section 7.1, Appendix D.1).

:mod:`~imm_ray.supervised.logistic.data` draws the data and computes the exact target,
:mod:`~imm_ray.supervised.logistic.train` trains many Monte Carlo runs as one batched
tensor program; its Tune trainable is in :mod:`tuning.logistic`.
"""

from imm_ray.supervised.logistic.data import QUALITY_MIX, Problem
from imm_ray.supervised.logistic.train import METHODS, Method, schedule_ratio, train_and_score

__all__ = ["METHODS", "QUALITY_MIX", "Method", "Problem", "schedule_ratio", "train_and_score"]
