"""``torch.optim.Adam`` that never imports ``torch._dynamo``: the same update, bit for bit.

torch wraps ``Optimizer``'s construction helpers, ``zero_grad``, ``state_dict`` and
``load_state_dict`` in ``torch._disable_dynamo`` and ``Adam.step`` in
``_use_grad_for_differentiable``, so that ``torch.compile`` leaves them alone. Each wrapper
imports ``torch._dynamo`` on its first call — sympy, ``torch.fx``, the FSDP modules:
≈ 1.3 s of a trial worker's start-up on this machine — although nothing here is ever
compiled. :class:`EagerAdam` calls the functions those wrappers wrap (their
``__wrapped__``) and does what the step wrapper does itself (gradients off around the
update, step pre- and post-hooks, the profiler's ``record_function``), so its updates are
``torch.optim.Adam``'s to the last bit (``tests/rl/test_seed_vectorized.py`` checks).
Use it only outside ``torch.compile``: under the compiler it would be traced.

Written against torch 2.13 (the version ``make setup`` installs), whose
``torch.optim.Optimizer`` the test above pins: :func:`make_adam` builds one only on that
version (:func:`imm_ray._compat.eager_adam`) and a plain ``torch.optim.Adam`` on any other,
with the same updates and a slower first step.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch.optim import Adam, Optimizer

from imm_ray import _compat

# The undecorated functions (unwrap: an Adam built before may have hooked Adam.step too).
_add_param_group = inspect.unwrap(Optimizer.add_param_group)
_zero_grad = inspect.unwrap(Optimizer.zero_grad)
_state_dict = inspect.unwrap(Optimizer.state_dict)
_load_state_dict = inspect.unwrap(Optimizer.load_state_dict)
_adam_step = inspect.unwrap(Adam.step)


def make_adam(params: Any, **kwargs: Any) -> Adam:
    """``torch.optim.Adam(params, **kwargs)``: an :class:`EagerAdam` on the torch it was
    tested against, a plain ``Adam`` on any other."""
    return (EagerAdam if _compat.eager_adam() else Adam)(params, **kwargs)


class EagerAdam(Adam):
    """``torch.optim.Adam`` (same arguments, state and updates) for eager use only."""

    def _patch_step_function(self) -> None:
        # Optimizer's own version, minus its dynamo wrapper: the profiler's name for
        # zero_grad; the step's hooks are run by step() below instead of a class patch.
        self._zero_grad_profile_name = f"Optimizer.zero_grad#{type(self).__name__}.zero_grad"

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        _add_param_group(self, param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        _zero_grad(self, set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return _state_dict(self)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        _load_state_dict(self, state_dict)

    def step(self, closure: Any = None) -> Any:
        """One Adam update, as ``Adam.step`` with its wrappers (minus dynamo's graph breaks,
        which do nothing outside the compiler)."""
        with torch.autograd.profiler.record_function(f"Optimizer.step#{type(self).__name__}.step"):
            args: tuple[Any, ...] = (self,) if closure is None else (self, closure)
            kwargs: dict[str, Any] = {}
            for hook in (*_global_pre_hooks(), *self._optimizer_step_pre_hooks.values()):
                result = hook(self, args, kwargs)
                if result is not None:
                    args, kwargs = result
            with torch.set_grad_enabled(self.defaults["differentiable"]):
                out = _adam_step(*args, **kwargs)
            self._optimizer_step_code()
            for hook in (*self._optimizer_step_post_hooks.values(), *_global_post_hooks()):
                hook(self, args, kwargs)
            return out


def _global_pre_hooks() -> tuple[Any, ...]:
    from torch.optim import optimizer

    return tuple(optimizer._global_optimizer_pre_hooks.values())


def _global_post_hooks() -> tuple[Any, ...]:
    from torch.optim import optimizer

    return tuple(optimizer._global_optimizer_post_hooks.values())
