"""Speed of the LSTM LM's IMM branch (small preset by default), in one run:

- **throughput** in token-steps per second (one LSTM step of one token, forward and
  backward): the main training pass (``batch × unroll`` token-steps per batch) against the
  sampled-IMM branch, whose k histories of position i run i + 1 steps each
  (``batch × k × Σᵢ (i + 1)`` token-steps), on a k-sample batch and on a 1-sample batch;
- **step-time ratios**: the mean training step of ``imm`` (k = 10, j = 5) and of
  ``serialized`` over the same batches, against ``none`` (the training loop only,
  validation excluded), in ``--rounds`` alternating runs, with the ratio of each round and
  their median (``--threads``: torch's threads, the same for every method): over whole
  runs, and in the steady state after ``--warmup`` steps (``steady_*``).

    python benchmarks/lm_imm_speed.py /tmp/austen/ptb [--preset small] [--batches 20]

A GPU is used with ``--device cuda``. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import time

import torch

from imm_ray._memory import reuse_freed_memory
from imm_ray.restricted.kneser_ney import estimate_kneser_ney
from imm_ray.supervised.lm.corpus import load_corpus
from imm_ray.supervised.lm.imm_branch import sampled_imm_backward
from imm_ray.supervised.lm.metrics import batchify
from imm_ray.supervised.lm.train import EpochTotals, LMConfig, LMTrainer


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def branch_throughput(trainer: LMTrainer, batches: int, k: int) -> dict[str, float]:
    """Seconds and token-steps of the main pass and of the IMM branch on the same batches."""
    config, model = trainer.config, trainer.model
    device = config.device
    data = batchify(trainer.corpus.train, config.batch_size).to(device)
    state = model.init_state(config.batch_size)
    main_s = imm_s = 0.0
    main_steps = imm_steps = 0
    for step in range(batches):
        offset = step * config.unroll
        inputs = data[:, offset : offset + config.unroll]
        targets = data[:, offset + 1 : offset + 1 + config.unroll]
        carried = state
        _sync(device)
        start = time.perf_counter()
        log_probs, state = model(inputs, carried)
        loss = -log_probs.gather(-1, targets.unsqueeze(-1)).mean()
        model.zero_grad()
        loss.backward()
        _sync(device)
        main_s += time.perf_counter() - start
        main_steps += inputs.numel()
        state = tuple(s.detach() for s in state)
        target = trainer.bigram.rows(inputs)
        model.zero_grad()
        _sync(device)
        start = time.perf_counter()
        _, rows = sampled_imm_backward(
            model, inputs, carried, target, trainer.sampler, k, trainer.generator
        )
        _sync(device)
        imm_s += time.perf_counter() - start
        # Every kept position i contributes k histories of i + 1 steps.
        kept = trainer.sampler.has_history(inputs.cpu())
        lengths = torch.arange(1, inputs.shape[1] + 1).expand_as(kept)
        imm_steps += int((lengths * kept).sum()) * k
        assert rows == int(kept.sum())
    return {
        "main_token_steps_per_s": main_steps / main_s,
        "imm_token_steps_per_s": imm_steps / imm_s,
        "main_s_per_batch": main_s / batches,
        "imm_s_per_batch": imm_s / batches,
    }


def step_seconds(
    configs: dict[str, LMConfig], corpus, bigram, rounds: int = 1, warmup: int = 0
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Mean training step of each config in each of ``rounds`` rounds, validation excluded:
    over all its steps, and over the steps after the first ``warmup`` (the steady state).

    In a round every method trains its ``max_batches`` steps in turn, on a fresh trainer,
    and every step is timed until its epoch ends. Steps are not interleaved one by one:
    two models stepping in turn evict each other's weights and buffers from the caches,
    which slowed ``none`` by half on this project's 2-core machine. Alternating whole runs
    lets every method see the same drift of the machine's load; a ratio is quoted per round.
    The first steps of a run pay one-off costs that a long run spreads thin: serialized
    IMM's V × V table is faulted in page by page while its first window fills it (on this
    project's VM a first touch costs about 12 µs a page, 0.45 s for the small preset's
    first 100 batches)."""
    whole: dict[str, list[float]] = {name: [] for name in configs}
    steady: dict[str, list[float]] = {name: [] for name in configs}
    device = next(iter(configs.values())).device
    for _ in range(rounds):
        for name, config in configs.items():
            trainer = LMTrainer(config, corpus, bigram)
            _sync(device)
            stamps = [time.perf_counter()]
            for _ in trainer.epoch_steps(EpochTotals()):
                _sync(device)
                stamps.append(time.perf_counter())
            count = len(stamps) - 1
            whole[name].append((stamps[-1] - stamps[0]) / count)
            if warmup < count:
                steady[name].append((stamps[-1] - stamps[warmup]) / (count - warmup))
    return whole, steady


def main() -> None:
    # As `imm-ray train lm` and Tune's LM trials run (the trainer no longer sets it itself).
    reuse_freed_memory()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", help="a PTB-format folder")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batches", type=int, default=20, help="batches per measurement")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--precision", default="fp32", help="arithmetic of the training passes (fp32, bf16)"
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        default=["none", "imm", "serialized"],
        help="methods whose step time is measured, their steps interleaved (none first: "
        "the ratios' base)",
    )
    parser.add_argument(
        "--no-throughput", action="store_true", help="skip the branch-throughput measurement"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating runs of each method (default 3)"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=100,
        help="steps of each run left out of the steady-state figures (default 100, one "
        "refresh window of the small preset); the whole-run figures keep them",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    corpus = load_corpus(args.data)
    bigram = estimate_kneser_ney(corpus.train, len(corpus.vocab), corpus.vocab.eos_id)
    base = LMConfig.preset(
        args.preset,
        max_batches=args.batches,
        epochs=1,
        device=args.device,
        precision=args.precision,
    )
    result: dict[str, object] = {
        "preset": args.preset,
        "device": args.device,
        "threads": args.threads,
        "precision": args.precision,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "batches": args.batches,
        "warmup": args.warmup,
    }
    if not args.no_throughput:
        trainer = LMTrainer(dataclasses.replace(base, method="imm"), corpus, bigram)
        for k in (base.k, 1):
            part = branch_throughput(trainer, args.batches, k)
            part["imm_over_main_throughput"] = (
                part["imm_token_steps_per_s"] / part["main_token_steps_per_s"]
            )
            result[f"k{k}"] = part
    whole, steady = step_seconds(
        {method: dataclasses.replace(base, method=method) for method in args.methods},
        corpus,
        bigram,
        args.rounds,
        args.warmup,
    )
    first = args.methods[0]
    for label, seconds in (("", whole), ("steady_", steady)):
        if label and not seconds[first]:
            continue
        result[f"{label}step_seconds"] = seconds
        for method in args.methods[1:]:
            ratios = [a / b for a, b in zip(seconds[method], seconds[first], strict=True)]
            result[f"{label}{method}_step_ratio_per_round"] = ratios
            result[f"{label}{method}_step_ratio"] = statistics.median(ratios)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
