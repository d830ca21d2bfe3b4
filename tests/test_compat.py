"""Every private-API path (imm_ray._compat) is taken only on the versions it was tested
against, and each one's public fallback, forced here, runs and gives the same results.
The shutdown fallback is tested with the other shutdown tests (tests/test_cluster.py)."""

from __future__ import annotations

import ctypes
import io
import sys

import pytest
import torch
from torch import nn

from imm_ray import _compat


def test_the_guards_are_listed_and_each_has_a_forced_fallback_test():
    # A new private use gets a guard in imm_ray._compat and a fallback test: add both here.
    names = {guard.__name__ for guard in _compat.GUARDS}
    assert names == {
        "eager_adam",  # test_make_adam_on_another_torch_is_plain_adam_with_the_same_updates
        "onednn_linear",  # test_a_frozen_linear_on_another_torch_is_f_linear
        "ray_kill_monitor",  # tests/test_cluster.py::test_shutdown_on_another_ray_...
        "tune_default_env_vars",  # test_on_another_ray_tunes_environment_is_left_alone
        "glibc_mallopt",  # test_without_glibc_the_allocator_keeps_its_defaults
        "fast_exit",  # test_the_cli_exits_normally_on_other_versions
        "tune_saves_pbt_members",  # test_on_another_ray_pbt_leaves_tunes_saved_trial_...
        # tests/tuning/test_search.py::test_resume_forgets_the_checkpoints_a_killed_...
        "tune_state_checkpoints",
        # tests/tuning/test_checkpoints.py::test_a_worker_taken_up_..._folder[tune-fallback]
        "tune_checkpoint_index",
    }
    assert set(_compat.TESTED) == {"torch", "ray", "python"}


def test_the_installed_versions_are_the_tested_ones_local_suffixes_ignored(monkeypatch):
    # The suite runs on the tested versions, so every private path is the one it checks.
    assert all(guard() for guard in _compat.GUARDS)
    monkeypatch.setattr(torch, "__version__", "2.13.0+cu128")
    assert _compat.is_tested("torch")
    for other in ("2.13.1", "2.12.0", "2.13.0a0", "2.2.0"):
        monkeypatch.setattr(torch, "__version__", other)
        assert not _compat.is_tested("torch"), other


def test_make_adam_on_another_torch_is_plain_adam_with_the_same_updates(monkeypatch):
    from imm_ray.rl.seeds.eager_adam import EagerAdam, make_adam

    torch.manual_seed(0)
    start = torch.randn(4, 6)
    grads = [torch.randn_like(start) for _ in range(5)]

    def run() -> tuple[type, torch.Tensor, dict]:
        param = nn.Parameter(start.clone())
        optimizer = make_adam([param], lr=1e-2, weight_decay=0.1)
        for grad in grads:
            optimizer.zero_grad()
            param.grad = grad.clone()
            optimizer.step()
        return type(optimizer), param.detach(), optimizer.state_dict()

    private_type, private, private_state = run()
    monkeypatch.setattr(_compat, "eager_adam", lambda: False)
    public_type, public, public_state = run()
    assert (private_type, public_type) == (EagerAdam, torch.optim.Adam)
    assert torch.equal(private, public)
    for key, value in public_state["state"][0].items():
        assert torch.equal(private_state["state"][0][key], value), key


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_frozen_linear_on_another_torch_is_f_linear(monkeypatch, dtype):
    from imm_ray.supervised.lm.model import FrozenLinear

    torch.manual_seed(1)
    linear = nn.Linear(16, 40).to(dtype)
    private = FrozenLinear(linear, rows_hint=12)
    monkeypatch.setattr(_compat, "onednn_linear", lambda: False)
    public = FrozenLinear(linear, rows_hint=12)
    assert public.packed is None
    x = torch.randn(12, 16).to(dtype)
    with torch.no_grad():
        want = nn.functional.linear(x, linear.weight, linear.bias)
        torch.testing.assert_close(public(x), want, rtol=0, atol=0)
        torch.testing.assert_close(private(x), public(x))


def test_on_another_ray_tunes_environment_is_left_alone(monkeypatch):
    from ray.tune.execution import class_cache

    from tuning.sweep import _trials_on_prestarted_workers

    before = dict(class_cache.DEFAULT_ENV_VARS)
    assert before == {"PL_DISABLE_FORK": "1"}  # Tune 2.60's default, which the guard pins
    with _trials_on_prestarted_workers():
        assert class_cache.DEFAULT_ENV_VARS == {}
    assert class_cache.DEFAULT_ENV_VARS == before
    monkeypatch.setattr(_compat, "tune_default_env_vars", lambda: False)
    with _trials_on_prestarted_workers():
        assert class_cache.DEFAULT_ENV_VARS == before
    assert class_cache.DEFAULT_ENV_VARS == before


def test_without_glibc_the_allocator_keeps_its_defaults(monkeypatch):
    from imm_ray import _memory

    calls = []
    monkeypatch.setattr(ctypes, "CDLL", lambda *args, **kwargs: calls.append(args))
    monkeypatch.setattr(_compat, "glibc_mallopt", lambda: False)
    _memory.reuse_freed_memory.cache_clear()
    try:
        assert _memory.reuse_freed_memory() is False
    finally:
        _memory.reuse_freed_memory.cache_clear()
    assert calls == []  # libc was never even opened


def test_a_trainer_leaves_the_processs_allocator_alone(monkeypatch):
    # mallopt is the programs' choice (imm-ray train lm, Tune's LM trials), not a class's.
    import inspect

    from imm_ray.supervised.lm import train

    assert "reuse_freed_memory" not in inspect.getsource(train)


@pytest.mark.parametrize("fast", [True, False])
def test_the_cli_exits_normally_on_other_versions(monkeypatch, fast):
    from imm_ray.cli import program as cli

    class Exited(Exception):
        pass

    def fake_exit(code: int) -> None:
        raise Exited(code)

    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(cli, "main", lambda: (print("done", file=out, end=""), 3)[1])
    monkeypatch.setattr(cli.os, "_exit", fake_exit)
    monkeypatch.setattr("logging.shutdown", lambda: None)  # would close pytest's handlers
    monkeypatch.setattr(_compat, "fast_exit", lambda: fast)
    # As in a command that has shut its Ray down (an earlier test may have left this
    # process's Ray up, and a Ray still up takes the normal exit whatever the versions).
    monkeypatch.delitem(sys.modules, "ray", raising=False)
    flushed = []
    for stream in (out, err):
        monkeypatch.setattr(stream, "flush", lambda stream=stream: flushed.append(stream))
    monkeypatch.setattr(cli.sys, "stdout", out)
    monkeypatch.setattr(cli.sys, "stderr", err)
    if fast:  # the tested versions: output flushed, then os._exit without teardown
        with pytest.raises(Exited) as exited:
            cli.run()
        assert exited.value.args == (3,)
        assert flushed == [out, err]
    else:  # elsewhere: a normal exit, every exit hook and teardown included
        with pytest.raises(SystemExit) as exited:
            cli.run()
        assert exited.value.code == 3
    assert out.getvalue() == "done"


@pytest.mark.parametrize("tested", [True, False])
def test_on_another_ray_pbt_leaves_tunes_saved_trial_states_alone(monkeypatch, tested):
    """The tested Ray: every member's cached state is dropped and marked to be saved again
    after each PBT result. Another: the member's PBT state is still written onto its trial
    (Tune saves it whenever it saves the trial), and Tune's caches are left as they are."""
    from types import SimpleNamespace

    from tuning.search_algorithms import SeededPBT

    calls: list[str] = []

    class Member:  # what _keep_state touches of a Tune trial (hashable, as trials are)
        invalidate_json_state = staticmethod(lambda: calls.append("json"))
        run_metadata = SimpleNamespace(invalidate_cache=lambda: calls.append("metadata"))

    trial = Member()
    controller = SimpleNamespace(_mark_trial_to_checkpoint=lambda t: calls.append("mark"))
    pbt = SeededPBT(seed=0, time_attr="epochs", hyperparam_mutations={"r": [0.1, 0.2]})
    pbt._trial_state = {
        trial: SimpleNamespace(last_score=1.5, last_train_time=10, last_perturbation_time=5)
    }
    monkeypatch.setattr(_compat, "tune_saves_pbt_members", lambda: tested)
    pbt._keep_state(SimpleNamespace(_tune_controller=controller))
    assert getattr(trial, SeededPBT.KEPT) == {
        "last_score": 1.5,
        "last_train_time": 10,
        "last_perturbation_time": 5,
        "next_sync": pbt._next_perturbation_sync,
    }
    assert calls == (["json", "metadata", "mark"] if tested else [])
