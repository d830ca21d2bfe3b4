"""Step time of a causal LM's IMM methods relative to a step without IMM (issue 23).

Usage: python benchmarks/causal_lm_speed.py DATA [--steps N] [--preset small] [--clip C]
[--precision fp32|bf16]

DATA is a PTB-format folder (e.g. the Austen split of ``imm-ray lm prepare``). One
IMMTrainer per method, the preset's GPT-2 over DATA's words, the same batches of
windows; each step is ``compute_loss``, ``backward`` and an AdamW step, with the
gradient clipped as Trainer does (each term on its own where the method clips them
separately: sampled IMM by default, serialized IMM on request), timed after 3 warm-up
steps, methods interleaved round by round so that load drifts hit them alike. Prints each
method's mean step time and its ratio to ``none``, and the sampled branch's token
throughput (window tokens per second of its forward and backward) relative to the main
pass's (batch tokens per second of a ``none`` step); then, for serialized IMM at 4
positions, the backward pass of the terms' sum against that of each term on its own (what
clipping the terms separately costs at the least).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--preset", default="small")
    parser.add_argument(
        "--clip",
        type=float,
        default=1.0,
        help="the gradient norm bound, of each term where they are clipped apart (0: none)",
    )
    parser.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        default="fp32",
        help="bf16: the passes under CPU autocast, serialized IMM's snapshot in bfloat16",
    )
    args = parser.parse_args()
    bf16 = args.precision == "bf16"

    from transformers import TrainingArguments

    from imm_ray.restricted.kneser_ney import estimate_kneser_ney
    from imm_ray.supervised.hf_lm.train import CausalLMConfig, fresh_model, windows
    from imm_ray.supervised.hf_lm.trainer import IMMTrainer
    from imm_ray.supervised.lm.corpus import load_corpus

    corpus = load_corpus(args.data)
    vocab, eos = len(corpus.vocab), corpus.vocab.eos_id
    bigram = estimate_kneser_ney(corpus.train, vocab, eos)
    config = CausalLMConfig.preset(args.preset)
    data = windows(corpus.train, eos, config.context)
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(data), generator=generator)
    batches = [
        torch.stack([data[int(i)]["input_ids"] for i in order[s : s + config.batch_size]])
        for s in range(0, (args.steps + 3) * config.batch_size, config.batch_size)
    ]
    methods = {
        "none": {"method": "none"},
        "imm k=10 j=5": {"method": "imm", "k": 10, "every": 5},
        "imm k=10 j=1": {"method": "imm", "k": 10, "every": 1},
        "serialized r=50": {"method": "serialized", "refresh_every": 50},
        "serialized r=50, 8 positions per row": {
            "method": "serialized",
            "refresh_every": 50,
            "positions": 8,
        },
        "serialized r=50, 4 positions per row": {
            "method": "serialized",
            "refresh_every": 50,
            "positions": 4,
        },
        "serialized r=50, 4 positions per row, terms clipped apart": {
            "method": "serialized",
            "refresh_every": 50,
            "positions": 4,
            "clip_separately": True,
        },
    }
    out = tempfile.mkdtemp()
    runs = {}
    for name, fields in methods.items():
        model = fresh_model(config, vocab, eos)
        trainer = IMMTrainer(
            model,
            TrainingArguments(
                output_dir=out, report_to=[], use_cpu=True, max_grad_norm=args.clip, bf16=bf16
            ),
            imm_config=config.replace(**fields).imm_config(),
            corpus=corpus.train,
            bigram=bigram,
            eos_id=eos,
        )
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        runs[name] = (trainer, model.train(), optimizer, [])
    for step, batch in enumerate(batches):
        for trainer, model, optimizer, times in runs.values():
            trainer.state.global_step = step
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = trainer.compute_loss(model, {"input_ids": batch, "labels": batch})
            loss.backward()
            if trainer.term_gradients is not None:
                trainer.clip_terms_(model)  # each term on its own, then their sum
            elif args.clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)  # as Trainer
            optimizer.step()
            optimizer.zero_grad()
            if step >= 3:
                times.append(time.perf_counter() - start)
    base = statistics.mean(runs["none"][3])
    tokens = config.batch_size * config.context
    print(
        f"preset {args.preset}: {config.layers} layers × {config.width}, context "
        f"{config.context}, batch {config.batch_size}, vocabulary {vocab}; "
        f"{args.steps} timed steps; gradient norms clipped to {args.clip}; {args.precision}"
    )
    print("| method | step (ms) | × none |")
    print("|---|---:|---:|")
    for name, (_, _, _, times) in runs.items():
        mean = statistics.mean(times)
        print(f"| {name} | {1000 * mean:.1f} | {mean / base:.2f} |")
    # The sampled branch every step (j = 1): k windows of (context) tokens per row.
    branch = statistics.mean(runs["imm k=10 j=1"][3]) - base
    branch_tokens = config.batch_size * 10 * config.context
    print(
        f"\nmain pass: {tokens / base:,.0f} tokens/s; sampled branch (k = 10, every step): "
        f"{branch_tokens / branch:,.0f} window tokens/s, "
        f"{(branch_tokens / branch) / (tokens / base):.2f} × the main pass's rate"
    )
    _second_backward(runs["serialized r=50, 4 positions per row"], batches, base, bf16)


def _second_backward(run, batches, base: float, bf16: bool) -> None:
    """What clipping the terms separately costs at the least: the IMM term's gradient taken
    apart from the main term's, a second backward pass through the layers. Serialized IMM
    at 4 positions, the same batches: the terms' sum back-propagated once, against each
    term back-propagated on its own, both after the same forward pass."""
    trainer, model, _, _ = run
    params = [p for p in model.parameters() if p.requires_grad]
    times: dict[str, list[float]] = {"one": [], "two": []}
    for step, batch in enumerate(batches):
        trainer.state.global_step = step
        for mode in ("one", "two"):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                _, terms, _ = trainer.objective.training_terms(
                    model, {"input_ids": batch, "labels": batch}, None, step=step
                )
            start = time.perf_counter()
            if mode == "one":
                torch.autograd.grad(terms["lm"] + terms["imm"], params, allow_unused=True)
            else:
                torch.autograd.grad(terms["lm"], params, allow_unused=True, retain_graph=True)
                torch.autograd.grad(terms["imm"], params, allow_unused=True)
            if step >= 3:
                times[mode].append(time.perf_counter() - start)
    one, two = statistics.mean(times["one"]), statistics.mean(times["two"])
    print(
        f"serialized IMM, 4 positions: backward of the terms' sum {1000 * one:.1f} ms, of each "
        f"term on its own {1000 * two:.1f} ms: the second pass {1000 * (two - one):.1f} ms, "
        f"{(two - one) / base:.2f} × a step without IMM"
    )


if __name__ == "__main__":
    main()
