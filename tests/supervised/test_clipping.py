"""TermGradients: each term's gradient clipped on its own, once per optimizer step, on what
the step's micro-batches accumulated, against a hand computation; and under
torch.distributed (two gloo processes), on the gradients averaged over the processes."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from imm_ray.supervised.clipping import TermGradients

A = torch.tensor([[1.0, 2.0, -1.0], [0.5, -1.0, 3.0]])  # one row per micro-batch
B = torch.tensor([[2.0, 0.0, 1.0], [-1.0, 4.0, 0.5]])
W0 = torch.tensor([0.3, -0.2, 0.5])
LAM, BOUND = 0.25, 1.0


def terms_of(w: torch.Tensor, row: int) -> dict[str, torch.Tensor]:
    """A primary term (w·a)² and a second one 3·(w·b), with gradients 2(w·a)·a and 3b."""
    return {"main": (w @ A[row]) ** 2, "imm": 3.0 * (w @ B[row])}


def clip(g: torch.Tensor) -> torch.Tensor:
    return g * min(1.0, BOUND / (float(g.norm()) + 1e-6))


def test_each_term_is_clipped_on_the_gradient_its_micro_batches_accumulated():
    w = W0.clone().requires_grad_()
    clipped = TermGradients(BOUND)
    for row in (0, 1):
        terms = terms_of(w, row)
        loss = clipped.add(terms, {"main": 1.0, "imm": LAM}, [w], scale=0.5)
        # Its value is the weighted sum; Trainer scales it and back-propagates it.
        total = terms["main"] + LAM * terms["imm"]
        assert float(loss.detach()) == pytest.approx(float(total.detach()))
        (0.5 * loss).backward()
    # Before the step, w.grad is the primary term's gradient alone.
    main = 0.5 * sum(2 * float(W0 @ A[r]) * A[r] for r in (0, 1))
    imm = 0.5 * 3.0 * (B[0] + B[1])
    torch.testing.assert_close(w.grad, main)
    assert main.norm() > BOUND and imm.norm() > BOUND  # both are clipped here
    clipped.clip_and_combine_([w])
    torch.testing.assert_close(w.grad, clip(main) + LAM * clip(imm))
    # Clipping each micro-batch's gradient instead gives another step.
    per_batch = sum(
        clip(0.5 * 2 * float(W0 @ A[r]) * A[r]) + LAM * clip(0.5 * 3.0 * B[r]) for r in (0, 1)
    )
    assert not torch.allclose(w.grad, per_batch, atol=1e-3)
    norms = clipped.pop_norms()
    assert norms == pytest.approx({"main": float(main.norm()), "imm": float(imm.norm())})
    assert clipped.buffers == {} and clipped.pop_norms() == {}


def test_a_term_a_parameter_has_no_gradient_of_is_left_out_and_a_small_one_unclipped():
    used, unused = W0.clone().requires_grad_(), torch.ones(2, requires_grad=True)
    clipped = TermGradients(100.0)
    terms = {"main": (used @ A[0]) ** 2, "imm": 3.0 * (used @ B[0]) + (unused**2).sum()}
    clipped.add(terms, {"main": 1.0, "imm": LAM}, [used, unused]).backward()
    assert unused.grad is None  # the primary term does not read it
    clipped.clip_and_combine_([used, unused])
    torch.testing.assert_close(used.grad, 2 * float(W0 @ A[0]) * A[0] + LAM * 3.0 * B[0])
    torch.testing.assert_close(unused.grad, LAM * 2 * torch.ones(2))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, port: int, results, imm_ranks: tuple[int, ...]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        w = W0.clone().requires_grad_()
        clipped = TermGradients(BOUND)
        terms = terms_of(w, rank)
        if rank not in imm_ranks:  # its batch had no IMM term (no member, say)
            del terms["imm"]
        clipped.add(terms, {"main": 1.0, "imm": LAM}, [w]).backward()
        # DistributedDataParallel averages p.grad over the processes in backward.
        dist.all_reduce(w.grad)
        w.grad.div_(2)
        clipped.clip_and_combine_([w])
        results[rank] = w.grad.clone()
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("imm_ranks", [(0, 1), (0,)], ids=["both", "one"])
def test_under_torch_distributed_the_buffers_are_averaged_over_the_processes_first(imm_ranks):
    """Both processes end with the clipped sum of the averaged terms; a process whose
    micro-batch lacked the IMM term takes part in its average with zeros (and does not
    leave the other waiting)."""
    with mp.Manager() as manager:
        shared = manager.dict()
        mp.spawn(_rank, args=(_free_port(), shared, imm_ranks), nprocs=2, join=True)
        results = dict(shared)
    main = 0.5 * sum(2 * float(W0 @ A[r]) * A[r] for r in (0, 1))
    imm = 0.5 * 3.0 * sum((B[r] for r in imm_ranks), torch.zeros(3))
    for rank in (0, 1):
        torch.testing.assert_close(results[rank], clip(main) + LAM * clip(imm))
