"""Step time of BERT fine-tuning with +MLM+IMM (k = 5, histories batched) against +MLM, in
one run.

On an acceptability task built from a PTB-format corpus (``make_acceptability``, in a
temporary folder), a fresh BERT of a preset size is fine-tuned with ``IMMTrainer`` for
``--steps`` optimizer steps per method; a Trainer callback times each step (forward,
backward and optimizer; the first ``--warmup`` steps are left out). Methods: base, mlm,
imm with every word position (the paper's default) and imm with ``--positions`` positions
per sentence. Prints one JSON object with the mean step times and the ratios to mlm.

    python benchmarks/bert_imm_speed.py /tmp/bert-ev/ptb [--preset tiny] [--steps 20]

``--device cuda --preset base`` times a BERT-base-sized model on a GPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch
from transformers import (
    DataCollatorWithPadding,
    PrinterCallback,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)

from imm_ray.console import quiet_transformers
from imm_ray.supervised.bert.acceptability import make_acceptability
from imm_ray.supervised.bert.finetune import encode_split, load_tokenizer, restricted_model
from imm_ray.supervised.bert.model import BertForMaskedLMAndClassification, preset_config
from imm_ray.supervised.bert.tasks import TASKS, load_task
from imm_ray.supervised.hf_lm.config import MaskedIMMConfig
from imm_ray.supervised.hf_lm.trainer import IMMTrainer


class StepTimer(TrainerCallback):
    def __init__(self, device: str) -> None:
        self.device, self.seconds = device, []

    def _sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    def on_step_begin(self, args, state, control, **kwargs):
        self._sync()
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self._sync()
        self.seconds.append(time.perf_counter() - self.start)


def time_method(method, positions, args, tokenizer, train, stream, bigram, steps, warmup):
    set_seed(0)
    model = BertForMaskedLMAndClassification(
        preset_config(args.preset, len(tokenizer), max_position_embeddings=512)
    )
    timer = StepTimer(args.device)
    with tempfile.TemporaryDirectory() as scratch:
        trainer = IMMTrainer(
            model=model,
            args=TrainingArguments(
                output_dir=scratch,
                max_steps=steps + warmup,
                per_device_train_batch_size=args.batch_size,
                learning_rate=5e-5,
                max_grad_norm=1.0,
                report_to=[],
                disable_tqdm=True,
                save_strategy="no",
                logging_strategy="no",
                use_cpu=args.device == "cpu",
                bf16=args.bf16,
            ),
            imm_config=MaskedIMMConfig(method=method, k=args.k, positions=positions),
            corpus=stream,
            bigram=bigram,
            train_dataset=train,
            processing_class=tokenizer,
            data_collator=DataCollatorWithPadding(tokenizer),
            callbacks=[timer],
        )
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    times = timer.seconds[warmup:]
    return sum(times) / len(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path, help="a PTB-format folder")
    parser.add_argument("--preset", default="tiny", choices=["tiny", "small", "base"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=32)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--positions", type=int, default=4)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    quiet_transformers()
    tokenizer = load_tokenizer("tiny", str(args.corpus))
    stream, bigram = restricted_model(tokenizer, args.corpus)
    with tempfile.TemporaryDirectory() as folder:
        make_acceptability(args.corpus, folder, max_words=args.max_length - 2, max_examples=2000)
        splits = load_task(TASKS["acceptability"], folder)
    train = encode_split(tokenizer, splits["train"], args.max_length)
    words = sum(len(ids) - 2 for ids in train.encoded["input_ids"]) / len(train)
    results = {}
    for label, method, positions in (
        ("base", "base", None),
        ("mlm", "mlm", None),
        ("imm_all_positions", "imm", None),
        (f"imm_{args.positions}_positions", "imm", args.positions),
    ):
        results[label] = time_method(
            method, positions, args, tokenizer, train, stream, bigram, args.steps, args.warmup
        )
    print(
        json.dumps(
            {
                "machine": f"{platform.machine()} {platform.processor()}".strip(),
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "device": args.device,
                "preset": args.preset,
                "vocab": len(tokenizer),
                "batch_size": args.batch_size,
                "mean_words_per_sentence": round(words, 1),
                "k": args.k,
                "steps": args.steps,
                "step_seconds": {k: round(v, 4) for k, v in results.items()},
                "ratio_to_mlm": {k: round(v / results["mlm"], 2) for k, v in results.items()},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
