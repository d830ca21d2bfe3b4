"""The paper's RL claim at small data (Fig. 2): IMM from the POMDP policy beats plain
REINFORCE, as a statistical statement over many seeds rather than a margin on three.

Design: 60 seeds on the seed-vectorized path (the one ``imm-ray train rl`` and the sweeps
run; ``test_paths_agree.py`` checks the single-seed path agrees with it, IMM on and off),
each seed trained once with IMM (λ by the paper's rule at 50 epochs, r = 0.2) and once
without. The per-seed differences d_s = IMM_s − none_s are paired by seed; the test asserts
mean(d) > K · SE with SE = sd(d) / √60.

K = 4: if IMM did not help (E[d] ≤ 0), a paired t statistic on 59 degrees of freedom
exceeds 4 with probability below 10⁻⁴, so a pass is evidence, not luck. The measured
effect leaves plenty of room: on seeds 0–119 the mean difference was 7.24 with a paired
SE of 0.21 (t ≈ 34; each block of 30 seeds alone gave t = 14–20). With IMM off (λ = 0)
every seed's figure equals the no-IMM one, d ≡ 0, and the test fails (checked by hand).
"""

from __future__ import annotations

import numpy as np

from imm_ray.rl import paper_lambda
from imm_ray.rl.seeds import SeedReinforceConfig, train_and_evaluate_seeds

SEEDS = list(range(60))
EPOCHS = 50
K = 4.0


def _rewards(ray_session, **imm) -> np.ndarray:
    """Every seed's evaluation after ``EPOCHS``, in the tests' shared embedded Ray."""
    config = SeedReinforceConfig().training(seeds=SEEDS, epochs_per_iteration=EPOCHS)
    return train_and_evaluate_seeds(config.imm(**imm), [EPOCHS])[EPOCHS]


def test_imm_beats_no_imm_at_50_epochs_by_more_than_4_standard_errors(ray_session):
    imm = _rewards(ray_session, lam=paper_lambda(EPOCHS))
    none = _rewards(ray_session, target=None)
    gain = imm - none
    stderr = gain.std(ddof=1) / np.sqrt(len(SEEDS))
    assert gain.mean() > K * stderr, (imm.mean(), none.mean(), gain.mean(), stderr)
