"""Causal Hugging Face language models with IMM (issue 23, beyond the paper) as Tune
sweeps: ``causal-lm`` runs none / KN noising / sampled IMM / serialized IMM over seeds on
a PTB-format folder, as ``table1`` does for the LSTM.

A :class:`CausalLMExperiment` is an :class:`~tuning.lm.LMExperiment` (settings, metrics,
data folder, preset, seeds, the Kneser–Ney curves) whose trials train
:func:`~imm_ray.supervised.hf_lm.train.train_causal_lm`'s GPT-2 with
:class:`~imm_ray.supervised.hf_lm.trainer.IMMTrainer`. Each trial reports after every
epoch with Trainer's own checkpoint (weights, optimizer, schedule, random states and the
draws' generator), so a restarted trial resumes from its last epoch, to the result an
uninterrupted one gives. The driver reads the corpus and estimates its bigram once; trials
get both through Ray's object store.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from tuning.lm import LMExperiment, LMSetting, report_epoch, trial_progress


@dataclass(frozen=True)
class CausalLMExperiment(LMExperiment):
    """Every setting over every seed: a causal LM (``CausalLMConfig`` fields as
    overrides; presets tiny and small) on one PTB-format folder."""

    kind: ClassVar[str] = "causal-lm"
    search_metrics: ClassVar[dict[str, str]] = {}  # not searched (yet)

    def config(self, setting: LMSetting, seed: int):
        """The ``CausalLMConfig`` of one trial (checked: bad fields fail here, before Ray
        starts)."""
        from imm_ray.supervised.hf_lm.train import CausalLMConfig

        device = "cuda" if self.gpus_per_trial > 0 else "cpu"
        return CausalLMConfig.preset(
            self.preset,
            **{**self.overrides, **setting.overrides},
            method=setting.method,
            seed=seed,
            device=device,
        )

    def trainable(self) -> Callable[[dict[str, Any], dict[str, Any]], None]:
        return causal_lm_trainable


#: The checkpoint folder a trial's Trainer resumes from, in its working folder.
_RESUMED = "checkpoint-{step}"


def causal_lm_trainable(config: dict[str, Any], inputs: dict[str, Any]) -> None:
    """Tune function trainable: one setting × one seed of a :class:`CausalLMExperiment`.

    After every epoch but the last it reports the validation perplexity with Trainer's
    checkpoint of that epoch; after the last, every metric of the experiment (test and
    induced-bigram perplexities, the Kneser–Ney bigram's beside them). A restarted trial
    continues from ``tune.get_checkpoint()``. Writes its PID to ``trial.pid`` first."""
    import torch
    from ray import tune
    from transformers import TrainerCallback

    from imm_ray.console import quiet_library_logs
    from imm_ray.supervised.hf_lm import metrics as lm_metrics
    from imm_ray.supervised.hf_lm.train import CausalLMConfig, train_causal_lm
    from tuning.placement import Placement, start_trial

    quiet_library_logs()
    start_trial()
    trial = config["trial"]
    torch.set_num_threads(max(1, int(trial.get("cpus", 1))))
    lm_config = CausalLMConfig(**trial["config"])
    where = Placement.of_trial(lm_config.device.startswith("cuda"))
    if where.gpu_unusable:
        lm_config = lm_config.replace(device="cpu")
    # Ray's object store hands out read-only arrays; torch needs writable ones.
    corpus = copy.deepcopy(inputs["corpus"])
    bigram = inputs["bigram"]
    seed = str(trial["seed"])
    eos = corpus.vocab.eos_id
    batch = max(lm_config.batch_size, 16)

    class ReportEpochs(TrainerCallback):
        """Reports each epoch but the last (whose metrics come after training) with the
        checkpoint Trainer has just saved."""

        def on_save(self, args, state, control, model=None, **kwargs):
            epoch = round(state.epoch or 0)
            if epoch >= lm_config.epochs:
                return
            valid = lm_metrics.perplexity(model, corpus.valid, eos, lm_config.context, batch)
            print(f"{trial['setting']} seed {seed} epoch {epoch}: valid ppl {valid:.2f}")
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            report_epoch(trial, {"valid_ppl": valid}, epoch, folder, where.row())

    with tempfile.TemporaryDirectory() as work:
        output = Path(work) / "run"
        output.mkdir()
        checkpoint = tune.get_checkpoint()
        resume = checkpoint is not None
        if checkpoint is not None:
            with checkpoint.as_directory() as folder:
                step = json.loads((Path(folder) / "trainer_state.json").read_text())
                target = output / _RESUMED.format(step=step["global_step"])
                shutil.copytree(folder, target)
        progress = trial_progress(trial["setting"], seed)
        _, results = train_causal_lm(
            lm_config,
            corpus,
            bigram,
            output,
            resume=resume,
            progress=progress,
            more_callbacks=[ReportEpochs()],
        )
        last = _latest(output)
        print(
            f"{trial['setting']} seed {seed} epoch {lm_config.epochs}: "
            f"valid ppl {results['valid_ppl']:.2f}, test ppl {results['test_ppl']:.2f}"
        )
        report_epoch(trial, results, lm_config.epochs, last, where.row())


def _latest(output: Path) -> Path:
    from imm_ray.supervised.hf_lm.train import latest_checkpoint

    found = latest_checkpoint(output)
    if found is None:
        raise RuntimeError(f"the trial saved no checkpoint in {output}")
    return found


EXPERIMENT_CLASS = CausalLMExperiment
EXPERIMENTS: dict[str, CausalLMExperiment] = {
    "causal-lm": CausalLMExperiment(
        "causal-lm",
        (
            LMSetting("None", "none"),
            LMSetting("KN noising", "noising"),
            LMSetting("IMM with KN bigram", "imm"),
            LMSetting("Serialized IMM with KN bigram", "serialized"),
        ),
        metrics=("valid_ppl", "test_ppl", "induced_test_ppl"),
        kn_label="Kneser–Ney bigram",
    ),
}
"""Table 1's methods on a causal transformer LM (2 layers × 128 at the small preset)."""
