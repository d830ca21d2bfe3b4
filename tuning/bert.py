"""The paper's BERT experiment (Sec. 7.2, App. D.2.2: Table 2): base / +MLM / +MLM+IMM.

A :class:`BertExperiment` lists settings (a method of
:mod:`imm_ray.supervised.hf_lm.trainer`, with its own overrides such as λ), a task and its
folder, a checkpoint (``--model``), the corpus of the bigram (``--corpus``) and seeds.
Every (setting, seed) is one trial: it fine-tunes with ``IMMTrainer`` and, after every
epoch, reports the task metric on dev with a Tune checkpoint (Trainer's own, so a
restarted trial resumes from its last epoch); after the last epoch it reports test as well.
The driver reads the task, the checkpoint's files, its tokenizer, the corpus and its
bigram once (:meth:`BertExperiment.load_inputs`); trials get them through Ray's object
store and open none of the driver's paths.

Rows reported: ``{"size": epoch, "setting": curve, "values": {seed: 100 · metric}}``; the
curves are ``"<label>, dev"`` and ``"<label>, test"``. Metrics are ×100, as in Table 2, and
the table shows mean ± standard deviation over the seeds (Table 2's ± spread) with the
10th and 90th percentiles.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from tuning.base import (
    ConfigSweepExperiment,
    MethodSetting,
    check_name_and_labels,
    check_resources,
    check_seeds,
)

SPLITS = ("dev", "test")
METRIC_LABELS = {"mcc": "MCC", "f1": "F1", "accuracy": "Accuracy"}


@dataclass(frozen=True)
class BertSetting(MethodSetting):
    """One column of Table 2: a fine-tuning method (FinetuneConfig fields as overrides)."""

    method: str = "base"


def _path(value: str | None) -> str | None:
    return None if value is None else str(Path(value).expanduser().resolve())


@dataclass(frozen=True)
class BertExperiment(ConfigSweepExperiment):
    """Every setting over every seed, on one task and one checkpoint."""

    name: str
    settings: tuple[BertSetting, ...]
    task: str = "acceptability"
    """cola, mrpc, qnli, rte, acceptability or a .json task file."""
    data: str = ""
    """The task's TSV folder; set with --data."""
    model: str = ""
    """The BERT checkpoint folder (or a preset); set with --model."""
    corpus: str | None = None
    """PTB-format folder of the bigram and the histories (the pretraining corpus)."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """FinetuneConfig fields for every setting (epochs, lr, positions, ...)."""
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0

    kind: ClassVar[str] = "bert"
    size_name: ClassVar[str] = "epochs"
    spread: ClassVar[str | None] = "std"
    own_options: ClassVar[tuple[str, ...]] = ("task", "data", "model", "corpus")
    """``with_overrides`` sets these; FinetuneConfig fields (``epochs``, ``lr``, ...) go
    to ``overrides``."""

    def __post_init__(self) -> None:
        check_name_and_labels(self.name, [s.label for s in self.settings])
        check_seeds(list(self.seeds))
        check_resources(self.cpus_per_trial, self.gpus_per_trial)
        for setting in self.settings:
            self.config(setting, 0)

    @property
    def metric(self) -> str:
        from imm_ray.supervised.bert.tasks import TASKS

        spec = TASKS.get(self.task)
        return spec.metric if spec is not None else "score"

    @property
    def y_label(self) -> str:  # type: ignore[override]
        return f"{METRIC_LABELS.get(self.metric, self.metric)} × 100"

    def config(self, setting: BertSetting, seed: int):
        """The FinetuneConfig of one trial (checked: bad fields fail here, before Ray starts)."""
        from imm_ray.supervised.bert.finetune import FinetuneConfig

        return FinetuneConfig(
            **{
                "task": self.task,
                "data": _path(self.data) if self.data else None,
                "model": self.model
                if not self.model or self.model in ("tiny", "small", "base")
                else _path(self.model),
                "corpus": _path(self.corpus),
                **self.overrides,
                **setting.overrides,
            },
            method=setting.method,
            seed=seed,
            device="cuda" if self.gpus_per_trial > 0 else "cpu",
        )

    def curve(self, label: str, split: str) -> str:
        return f"{label}, {split}"

    def trial_curves(self, label: str) -> dict[str, dict[str, str]]:
        return {"curves": {split: self.curve(label, split) for split in SPLITS}}

    def validate(self) -> None:
        """The task's folder and the checkpoint must be given (:meth:`load_inputs` reads and
        checks them)."""
        if not self.data:
            raise ValueError(f"{self.name} needs the task's TSV folder: pass --data DIR")
        if not self.model:
            raise ValueError(f"{self.name} needs a BERT checkpoint: pass --model PATH")

    def load_inputs(self) -> dict[str, Any]:
        """``{"runs": {inputs_key: RunInputs}}``: the task's splits, the checkpoint's files,
        its tokenizer and, where a setting uses IMM, the corpus stream and its bigram, read
        once for all settings that name the same files (in the paper's table2: all of
        them). Every method's run is then built from them once, so a checkpoint without
        its MLM head or a bigram over another vocabulary fails here, before Ray starts."""
        from imm_ray.console import quiet_transformers
        from imm_ray.supervised.bert.finetune import inputs_key, prepare_run, read_inputs

        self.validate()
        quiet_transformers()
        configs = [self.config(setting, self.seeds[0]) for setting in self.settings]
        runs: dict[tuple, Any] = {}
        checked: set[tuple] = set()
        for config in configs:
            key = inputs_key(config)
            if key not in runs:
                imm = any(c.method == "imm" for c in configs if inputs_key(c) == key)
                runs[key] = read_inputs(config, restricted=imm)
            if (key, config.method) not in checked:
                checked.add((key, config.method))
                prepare_run(config, runs[key])
        return {"runs": runs}

    def trainable(self) -> Callable[[dict[str, Any], dict[str, Any]], None]:
        return bert_trainable

    def curves(self) -> list[str]:
        return [self.curve(s.label, split) for split in SPLITS for s in self.settings]

    def point(self, setting: str, size: int) -> tuple[str, float]:
        return setting, float(size)

    def x_label(self) -> str:
        return "Epoch"


def _tune_callback(trial: dict[str, Any], metric: str, placement: dict[str, Any]):
    """A TrainerCallback that reports dev after every epoch, with Trainer's checkpoint
    (and ``placement``: where the trial runs)."""
    from ray import tune
    from transformers import TrainerCallback

    from tuning.checkpoints import report_checkpoint

    seed, curve = str(trial["seed"]), trial["curves"]["dev"]

    class TuneReport(TrainerCallback):
        def __init__(self) -> None:
            self.metrics: dict[str, float] = {}

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            self.metrics = dict(metrics or {})

        def on_save(self, args, state, control, **kwargs):
            folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
            value = 100.0 * float(self.metrics[f"eval_{metric}"])
            report_checkpoint(
                {
                    "size": round(state.epoch),
                    "setting": curve,
                    "values": {seed: value},
                    **placement,
                },
                tune.Checkpoint.from_directory(folder),
            )

    return TuneReport()


def bert_trainable(config: dict[str, Any], inputs: dict[str, Any]) -> None:
    """Tune function trainable: one setting × one seed, a checkpoint after every epoch, on
    the task, checkpoint, tokenizer and bigram of ``inputs`` (:meth:`BertExperiment.load_inputs`).

    Writes its PID to ``trial.pid`` in the trial folder first. A restarted trial continues
    from ``tune.get_checkpoint()`` (Trainer's checkpoint: weights, optimizer, schedule),
    also one taken on another device; its mask and history draws restart from the seed.
    A trial given a GPU that torch cannot use trains on CPU in fp32
    (:mod:`tuning.placement`).
    """
    import torch
    from ray import tune

    from imm_ray.console import quiet_library_logs, quiet_transformers
    from imm_ray.supervised.bert.finetune import (
        FinetuneConfig,
        finetune,
        inputs_key,
        prepare_run,
    )
    from tuning.placement import Placement, start_trial

    quiet_library_logs()
    quiet_transformers()
    trial = config["trial"]
    start_trial()
    torch.set_num_threads(max(1, int(trial.get("cpus", 1))))
    finetune_config = FinetuneConfig(**trial["config"])
    where = Placement.of_trial(finetune_config.device == "cuda")
    if where.gpu_unusable:
        finetune_config = dataclasses.replace(finetune_config, device="cpu", precision="fp32")
    shared = inputs["runs"][inputs_key(finetune_config)]
    if shared.stream is not None:
        # Ray's object store hands out NumPy arrays read-only (shared by the node's
        # trials); torch, which wraps the history stream, needs a writable copy.
        shared = dataclasses.replace(shared, stream=shared.stream.copy())
    run = prepare_run(finetune_config, shared)
    metric = run.spec.metric
    # Trainer's own checkpoints are scratch (each one Tune keeps is reported, and copied,
    # as a Tune checkpoint): they go to the trial's working directory, which Tune does not
    # copy to the storage, not to the trial folder, which it does.
    output_dir = os.path.join(tune.get_context().get_storage().trial_working_directory, "trainer")
    resume_from = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            resume_from = os.path.join(output_dir, "resumed")
            shutil.rmtree(resume_from, ignore_errors=True)
            shutil.copytree(folder, resume_from)
    results = finetune(
        run,
        output_dir,
        callbacks=[_tune_callback(trial, metric, where.row())],
        save=True,
        resume_from=resume_from,
    )
    seed = str(trial["seed"])
    print(
        f"{trial['setting']} seed {seed}: dev {metric} {results[f'dev_{metric}']:.4f}, "
        f"{results['train_seconds']:.0f} s",
        flush=True,
    )
    scalars = {k: float(v) for k, v in results.items()}
    for split in SPLITS:
        key = f"{split}_{metric}"
        if key in results:
            tune.report(
                {
                    "size": finetune_config.epochs,
                    "setting": trial["curves"][split],
                    "values": {seed: 100.0 * results[key]},
                    **scalars,
                    **where.row(),
                }
            )


EXPERIMENT_CLASS = BertExperiment
EXPERIMENTS: dict[str, BertExperiment] = {
    "table2": BertExperiment(
        "table2",
        (
            BertSetting("BERT", "base"),
            BertSetting("+MLM", "mlm"),
            BertSetting("+MLM+IMM", "imm"),
        ),
    ),
}
"""Table 2: BERT fine-tuned without and with MLM, and with IMM within MLM (k = 5, λ = 0.2)."""
