"""The GLUE metrics of Table 2: Matthews correlation (CoLA), F1 (MRPC), accuracy (QNLI, RTE).

Binary labels 0/1; the positive class of F1 is 1 (MRPC's "equivalent"). Each is in [0, 1]
(MCC in [−1, 1]); Table 2 shows them ×100.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from imm_ray import checks

METRICS = ("mcc", "f1", "accuracy")


def _confusion(predictions: Sequence[int], labels: Sequence[int]) -> tuple[int, int, int, int]:
    if len(predictions) != len(labels) or not labels:
        raise ValueError(
            f"predictions and labels must be non-empty and of one length, got "
            f"{len(predictions)} and {len(labels)}"
        )
    tp = sum(1 for p, y in zip(predictions, labels, strict=True) if p == 1 and y == 1)
    tn = sum(1 for p, y in zip(predictions, labels, strict=True) if p == 0 and y == 0)
    fp = sum(1 for p, y in zip(predictions, labels, strict=True) if p == 1 and y == 0)
    fn = sum(1 for p, y in zip(predictions, labels, strict=True) if p == 0 and y == 1)
    return tp, tn, fp, fn


def matthews_correlation(predictions: Sequence[int], labels: Sequence[int]) -> float:
    """(TP·TN − FP·FN) / √((TP+FP)(TP+FN)(TN+FP)(TN+FN)); 0 when a factor is 0 (a constant
    prediction or a one-class set), as scikit-learn defines it."""
    tp, tn, fp, fn = _confusion(predictions, labels)
    denominator = (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)
    return 0.0 if denominator == 0 else (tp * tn - fp * fn) / math.sqrt(denominator)


def f1_score(predictions: Sequence[int], labels: Sequence[int]) -> float:
    """2·TP / (2·TP + FP + FN) for the class 1; 0 when there is no TP."""
    tp, _, fp, fn = _confusion(predictions, labels)
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def accuracy(predictions: Sequence[int], labels: Sequence[int]) -> float:
    """The fraction of predictions equal to their label (any number of classes)."""
    if len(predictions) != len(labels) or not labels:
        raise ValueError("predictions and labels must be non-empty and of one length")
    return sum(1 for p, y in zip(predictions, labels, strict=True) if p == y) / len(labels)


def score(metric: str, predictions: Sequence[int], labels: Sequence[int]) -> float:
    """The metric called ``metric`` (:data:`METRICS`)."""
    checks.one_of("metric", metric, METRICS)
    functions = {"mcc": matthews_correlation, "f1": f1_score, "accuracy": accuracy}
    return functions[metric](list(predictions), list(labels))
