"""Every use of another package's private API or process-wide state, each behind one check.

Each guard below says whether one private path may be taken: only on the exact versions
it was written and tested against (:data:`TESTED`). Everywhere else the caller takes a
public path with the same results, only slower. A new private use gets a guard here and a
test that forces its fallback (``tests/test_compat.py`` lists them all).

=====================================  ==============================  =====================
guard                                  private path                    public fallback
=====================================  ==============================  =====================
:func:`eager_adam`                     torch.optim's unwrapped         ``torch.optim.Adam``
                                       functions (EagerAdam)
:func:`ray_kill_monitor`               ``Node.kill_monitor`` before    ``ray.shutdown()``
                                       ``ray.shutdown()``
:func:`tune_default_env_vars`          Tune's ``DEFAULT_ENV_VARS``     Tune's own env vars
                                       edited for a sweep
:func:`onednn_linear`                  ``torch.ops.mkldnn`` packed     ``F.linear``
                                       weights (FrozenLinear)
:func:`glibc_mallopt`                  glibc's ``mallopt`` (process-   the allocator's
                                       wide), by the LM commands       defaults
:func:`fast_exit`                      ``os._exit`` after the CLI      ``sys.exit``
                                       flushed its output
:func:`tune_saves_pbt_members`         Tune's cached trial states      Tune's caching: a
                                       refreshed after a PBT           resumed PBT search
                                       perturbation                    continues, not exactly
:func:`tune_state_checkpoints`         the checkpoints Tune's state    the state as stored: a
                                       lists, read and rewritten by    resumed trial may
                                       ``--resume``                    overwrite its last
                                                                       checkpoint
:func:`tune_checkpoint_index`          a trial's checkpoint index in   Tune's index: a PBT
                                       its ``StorageContext`` and      member may copy a
                                       the train session's storage     checkpoint its owner
                                                                       then writes over
=====================================  ==============================  =====================
"""

from __future__ import annotations

import functools
import platform
import sys

from packaging.version import Version

#: The versions each private path was written and tested against (a local suffix such as
#: torch's ``+cpu`` or ``+cu128`` is ignored).
TESTED = {"torch": ("2.13.0",), "ray": ("2.60.0",), "python": ("3.11",)}


def _version_of(package: str) -> str:
    if package == "python":
        return f"{sys.version_info.major}.{sys.version_info.minor}"
    module = sys.modules.get(package)
    if module is not None:
        return module.__version__
    from importlib.metadata import version  # no import of the package itself

    return version(package)


def is_tested(package: str) -> bool:
    """Whether the installed ``package`` is exactly one of the versions in :data:`TESTED`."""
    installed = Version(Version(_version_of(package)).public)  # without "+cpu"
    return any(Version(tested) == installed for tested in TESTED[package])


@functools.cache
def eager_adam() -> bool:
    """EagerAdam may call torch.optim's undecorated functions (``__wrapped__``)."""
    return is_tested("torch")


@functools.cache
def onednn_linear() -> bool:
    """FrozenLinear may pack its weight with ``torch.ops.mkldnn._reorder_linear_weight`` and
    multiply with ``torch.ops.mkldnn._linear_pointwise``."""
    return is_tested("torch")


@functools.cache
def ray_kill_monitor() -> bool:
    """shutdown_ray may stop the autoscaler monitor first with ``Node.kill_monitor``."""
    return is_tested("ray")


@functools.cache
def tune_default_env_vars() -> bool:
    """A sweep may drop ``PL_DISABLE_FORK`` from Tune's ``class_cache.DEFAULT_ENV_VARS``."""
    return is_tested("ray")


@functools.cache
def glibc_mallopt() -> bool:
    """The LM commands may raise glibc's mmap and trim thresholds (``mallopt``, documented
    in glibc's manual) for their whole process: only on Linux with glibc."""
    return sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


@functools.cache
def fast_exit() -> bool:
    """The CLI may leave with ``os._exit`` (no interpreter teardown) once its output is
    flushed: only with the Ray and Python it was tested on, whose teardown it skips."""
    return is_tested("ray") and is_tested("python")


@functools.cache
def tune_saves_pbt_members() -> bool:
    """A PBT search may have Tune save every member's state after a perturbation: its
    controller's ``_mark_trial_to_checkpoint`` and the caches of a trial's JSON state.
    Tune saves only the trials whose own status or result changed, so a paused member
    that a perturbation changed (its config, the checkpoint it copies) was saved as it was
    before, until it ran again."""
    return is_tested("ray")


@functools.cache
def tune_state_checkpoints() -> bool:
    """``--resume`` may read and rewrite the checkpoints each trial's run metadata lists in
    Tune's experiment state (``_TrainingRunMetadata``, ``_CheckpointManager``'s
    ``_checkpoint_results``), to forget those a killed driver deleted after the state was
    last stored."""
    return is_tested("ray")


@functools.cache
def tune_checkpoint_index() -> bool:
    """A trial's worker may move its checkpoint index (``StorageContext``'s
    ``current_checkpoint_index``; a function trainable's through the train session's
    ``storage``) past the folders already written, so that no checkpoint is written over
    (:mod:`tuning.checkpoints`)."""
    return is_tested("ray")


#: Every guard, for the test that forces each fallback.
GUARDS = (
    eager_adam,
    onednn_linear,
    ray_kill_monitor,
    tune_default_env_vars,
    glibc_mallopt,
    fast_exit,
    tune_saves_pbt_members,
    tune_state_checkpoints,
    tune_checkpoint_index,
)
