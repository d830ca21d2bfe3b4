"""The named searches of ``imm-ray search`` (:mod:`tuning.search`).

* ``rl-lambda``: r ∈ [0, 0.9] for the grid pair, Optuna, evaluated every 10 epochs up to 50
  (``--epochs E``: every E/5); with ``--scheduler asha`` a trial can stop at 10 or 30.
* ``rl-lambda-pbt``: population-based training of r ∈ [0, 0.9] over 500 epochs, λ may
  change every 50; the best member's schedule is the result.
* ``lm-lambda-asha``: λ log-uniform in [0.01, 2] for the LSTM (small preset, ``--data``),
  ASHA at every epoch, validation perplexity.
* ``logistic-lambda``: r ∈ [0, 0.95] for the logistic problem, one search per dataset size.

The experiments are built on first use: the LM and logistic kinds import torch.
"""

from __future__ import annotations

from collections.abc import Callable

from tuning.search import Search, SearchSpace


def _rl_lambda() -> Search:
    from tuning.rl import Experiment, Setting

    experiment = Experiment(
        "rl-lambda", (Setting("IMM", lam=0.25),), epochs=(10, 20, 30, 40, 50), seeds=30
    )
    return Search("rl-lambda", experiment, SearchSpace(param="r", low=0.0, high=0.9))


def _rl_lambda_pbt() -> Search:
    from tuning.rl import Experiment, Setting

    experiment = Experiment(
        "rl-lambda-pbt", (Setting("IMM", lam=0.25),), epochs=tuple(range(50, 501, 50)), seeds=30
    )
    space = SearchSpace(param="r", low=0.0, high=0.9, scheduler="pbt", num_samples=8)
    return Search("rl-lambda-pbt", experiment, space)


def _lm_lambda_asha() -> Search:
    from tuning.lm import LMExperiment, LMSetting

    experiment = LMExperiment(
        "lm-lambda-asha",
        (LMSetting("IMM with KN bigram", "imm"),),
        metrics=("valid_ppl",),
        seeds=(0,),
    )
    space = SearchSpace(param="lambda", low=0.01, high=2.0, log=True, scheduler="asha")
    return Search("lm-lambda-asha", experiment, space)


def _logistic_lambda() -> Search:
    from imm_ray.supervised.logistic.train import Method
    from tuning.logistic import LogisticExperiment, LogisticSetting

    experiment = LogisticExperiment(
        "logistic-lambda",
        (LogisticSetting("IMM", Method("imm", ratio=0.5)),),
        sizes=(2, 5, 10, 20, 50),
        runs=100,
        imm_trials=1,
    )
    return Search("logistic-lambda", experiment, SearchSpace(param="r", low=0.0, high=0.95))


SEARCHES: dict[str, Callable[[], Search]] = {
    "rl-lambda": _rl_lambda,
    "rl-lambda-pbt": _rl_lambda_pbt,
    "lm-lambda-asha": _lm_lambda_asha,
    "logistic-lambda": _logistic_lambda,
}


def named_search(name: str) -> Search | None:
    """The search called ``name``, or ``None``."""
    make = SEARCHES.get(name)
    return None if make is None else make()
