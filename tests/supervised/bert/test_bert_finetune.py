"""A fine-tuning run's inputs, read once into a picklable RunInputs, and its Trainer
checkpoints, which resume on another device than the one that wrote them."""

from __future__ import annotations

import dataclasses
import pickle
import shutil

import numpy as np
import pytest
import torch
import transformers
from gpu_checkpoints import resave_as_on_cuda
from transformers import BertForSequenceClassification, TrainerCallback

from imm_ray.supervised.bert.finetune import (
    FinetuneConfig,
    finetune,
    prepare_run,
    read_inputs,
    warmup_steps,
)
from imm_ray.supervised.bert.model import preset_config


@pytest.fixture
def config(bert_corpus, bert_checkpoint, acceptability_task):
    return FinetuneConfig(
        data=str(acceptability_task),
        model=str(bert_checkpoint),
        corpus=str(bert_corpus),
        method="base",
        epochs=2,
        batch_size=8,
        max_length=32,
        lr=3e-3,
        max_train_examples=24,
    )


def test_a_run_built_from_its_pickled_inputs_is_the_run_its_folders_give(config, tmp_path):
    config = dataclasses.replace(config, method="imm")
    from_folder = prepare_run(config)
    copy = tmp_path / "model"
    shutil.copytree(config.model, copy)
    copied = dataclasses.replace(config, model=str(copy))
    inputs = pickle.loads(pickle.dumps(read_inputs(copied)))
    shutil.rmtree(copy)
    from_inputs = prepare_run(copied, inputs)  # reads no file: the checkpoint is gone
    pairs = zip(
        from_folder.model.state_dict().items(), from_inputs.model.state_dict().items(), strict=True
    )
    for (name, a), (_, b) in pairs:
        assert torch.equal(a, b), name  # the new classifier too: both drawn from the seed
    text = "the cat sat"
    assert from_inputs.tokenizer(text)["input_ids"] == from_folder.tokenizer(text)["input_ids"]
    assert np.array_equal(from_inputs.corpus, from_folder.corpus)
    assert torch.equal(from_inputs.bigram.probs, from_folder.bigram.probs)


def test_a_copied_checkpoints_errors_name_the_checkpoint(tmp_path, bert_tokenizer, config):
    model = tmp_path / "no-mlm-head"
    BertForSequenceClassification(preset_config("tiny", len(bert_tokenizer))).save_pretrained(model)
    bert_tokenizer.save_pretrained(model)
    config = dataclasses.replace(config, model=str(model))
    with pytest.raises(ValueError, match=rf"model {model} has no MLM head \(missing cls\."):
        prepare_run(config)


class KeepFirstEpoch(TrainerCallback):
    """Copies the checkpoint Trainer saves after epoch 1 (it keeps only the newest)."""

    def __init__(self, folder) -> None:
        self.folder = folder

    def on_save(self, args, state, control, **kwargs):
        if round(state.epoch) == 1:
            shutil.copytree(f"{args.output_dir}/checkpoint-{state.global_step}", self.folder)


def test_a_trainer_checkpoint_taken_on_a_gpu_resumes_on_a_cpu(config, tmp_path):
    inputs = read_inputs(config)
    first = tmp_path / "epoch1"
    straight = finetune(
        prepare_run(config, inputs),
        tmp_path / "straight",
        callbacks=[KeepFirstEpoch(first)],
        save=True,
    )
    # As a GPU run writes it: the optimizer's tensors on cuda:0, a CUDA generator's state.
    resave_as_on_cuda(first / "optimizer.pt")
    with pytest.raises(RuntimeError, match="CUDA"):
        torch.load(first / "optimizer.pt", weights_only=False)
    rng = torch.load(first / "rng_state.pth", weights_only=False)
    torch.save({**rng, "cuda": torch.zeros(16, dtype=torch.uint8)}, first / "rng_state.pth")

    resumed = finetune(
        prepare_run(config, inputs), tmp_path / "resumed", save=True, resume_from=str(first)
    )
    # The base method draws nothing of its own: it resumes as if never interrupted.
    del straight["train_seconds"], resumed["train_seconds"]
    assert resumed == straight


# --- Warm-up: an integer number of steps, the one the installed transformers made of the ratio


def _float_warmup(ratio: float, total: int) -> int:
    """What the installed transformers makes of ``warmup_steps=ratio`` (the code's argument
    before it passed an integer) in a run of ``total`` optimizer steps."""
    from transformers import TrainingArguments

    args = TrainingArguments(output_dir="unused", warmup_steps=ratio, use_cpu=True, report_to=[])
    return args.get_warmup_steps(total)


needs_ratio_floats = pytest.mark.skipif(
    int(transformers.__version__.split(".")[0]) < 5,
    reason="a float warmup_steps means a ratio only from transformers 5 on (4.x refuses it)",
)


@needs_ratio_floats
def test_the_warmup_steps_are_what_transformers_made_of_the_ratio():
    for ratio in (0.0, 0.05, 0.1, 0.25, 0.3, 0.999):  # finetune's default 0.1, pretrain's 0.05
        for total in (*range(1, 64), 97, 100, 1000, 12_345):
            assert warmup_steps(ratio, total) == _float_warmup(ratio, total), (ratio, total)
    with pytest.raises(ValueError, match="between 0 and 1"):
        warmup_steps(1.5, 10)


class KeepWarmup(TrainerCallback):
    def on_train_begin(self, args, state, control, **kwargs):
        self.seen = (args.warmup_steps, state.max_steps, kwargs["lr_scheduler"].get_last_lr())


@needs_ratio_floats
def test_a_runs_trainer_gets_the_warmup_steps_the_ratio_gave_before(config, tmp_path):
    config = dataclasses.replace(config, warmup_ratio=0.3)
    kept = KeepWarmup()
    finetune(prepare_run(config, read_inputs(config)), tmp_path, callbacks=[kept])
    steps, total, first_lr = kept.seen
    assert total == 6  # 24 examples, batches of 8, 2 epochs
    assert isinstance(steps, int) and steps == _float_warmup(0.3, total) == 2
    assert set(first_lr) == {0.0}  # the linear warm-up starts from 0, in every group


#: What ``finetune`` returned for the ``config`` fixture's run, 10 epochs over all 48
#: examples, at each method and seed, with the BERT-only trainer that the one IMMTrainer
#: (imm_ray/supervised/hf_lm/trainer.py) replaced: commit 2abee7a's
#: imm_ray/supervised/bert/trainer.py, run on this project's CI machine type.
BEFORE_UNIFICATION = {
    "base/0": {
        "dev_mcc": 0.17149858514250885,
        "steps": 60.0,
        "task_loss": 0.2683706382910411,
        "test_mcc": 0.25819888974716115,
    },
    "base/1": {
        "dev_mcc": 0.04950737714883372,
        "steps": 60.0,
        "task_loss": 0.4167427718639374,
        "test_mcc": 0.25819888974716115,
    },
    "mlm/0": {
        "dev_mcc": 0.0,
        "steps": 60.0,
        "task_loss": 0.6922451655069987,
        "mlm_loss": 2.9742879072825112,
        "test_mcc": 0.0,
    },
    "mlm/1": {
        "dev_mcc": 0.0,
        "steps": 60.0,
        "task_loss": 0.6953141490618387,
        "mlm_loss": 3.296773592631022,
        "test_mcc": 0.0,
    },
    "imm/0": {
        "dev_mcc": 0.0,
        "steps": 60.0,
        "task_loss": 0.692071795463562,
        "mlm_loss": 3.023531675338745,
        "imm_risk": 3.0288314819335938,
        "test_mcc": 0.0,
    },
    "imm/1": {
        "dev_mcc": 0.11504474832710557,
        "steps": 60.0,
        "task_loss": 0.6953126589457194,
        "mlm_loss": 3.0662134488423667,
        "imm_risk": 3.0155464808146157,
        "test_mcc": 0.0,
    },
}


@pytest.mark.parametrize("method", ["base", "mlm", "imm"])
def test_fine_tuning_on_the_one_imm_trainer_gives_what_the_bert_trainer_gave(
    config, tmp_path, method
):
    """The BERT path (train bert, table2) on the IMMTrainer of any LM: the same MCC at
    the same seeds, and the same term means along the way, as the BERT-only trainer."""
    for seed in (0, 1):
        run = dataclasses.replace(
            config, method=method, seed=seed, epochs=10, max_train_examples=None
        )
        got = finetune(prepare_run(run), tmp_path / str(seed))
        got.pop("train_seconds")
        want = BEFORE_UNIFICATION[f"{method}/{seed}"]
        assert got.keys() == want.keys()
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-9), (seed, key)
