"""The paper's LSTM language-model experiments (Sec. 7.2, App. D.2: Table 1, Table 5).

An :class:`LMExperiment` lists settings (a method of :mod:`imm_ray.supervised.lm.train`,
with its own overrides such as λ), the metrics it tabulates, a PTB-format data folder,
a preset and seeds. Every (setting, seed) is one trial: language-model trials are long, so
each reports after every epoch with a Tune checkpoint and a restarted trial resumes from
its last epoch (``tune.get_checkpoint()``). The driver reads the corpus and estimates its
Kneser–Ney bigram once (:meth:`LMExperiment.load_inputs`); trials get both through Ray's
object store, so the data folder need exist only where the driver runs.

Rows reported: ``{"size": epoch, "setting": curve, "values": {seed: value}}``; the
validation perplexity after every epoch (when a metric), every metric after the last. A
curve is the setting's label, followed by the metric's name when there are several.

An experiment of one sampled-IMM setting and one seed can be searched (:mod:`tuning.search`:
its λ, by validation perplexity after every epoch): :func:`lm_search_trainable`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TextIO

from imm_ray import checks
from imm_ray.checks import ConfigError
from imm_ray.progress import Progress
from tuning.base import (
    ConfigSweepExperiment,
    MethodSetting,
    check_name_and_labels,
    check_resources,
    check_seeds,
)

#: Metric → its name in curve labels; "bigram X" is the induced bigram's perplexity on
#: split X (for the Kneser–Ney curve: the bigram's own).
METRIC_NAMES = {
    "valid_ppl": "valid",
    "test_ppl": "test",
    "induced_train_ppl": "bigram train",
    "induced_valid_ppl": "bigram valid",
    "induced_test_ppl": "bigram test",
}


@dataclass(frozen=True)
class LMSetting(MethodSetting):
    """One curve: an LM method (LMConfig fields as overrides)."""

    method: str = "none"


@dataclass(frozen=True)
class LMExperiment(ConfigSweepExperiment):
    """Every setting over every seed, on one PTB-format folder."""

    name: str
    settings: tuple[LMSetting, ...]
    metrics: tuple[str, ...] = ("valid_ppl", "test_ppl")
    """What the table shows, from :data:`METRIC_NAMES`."""
    data: str = ""
    """The PTB-format folder (``train.txt``, ``valid.txt``, ``test.txt``); set with --data."""
    preset: str = "small"
    """An LMConfig preset: small, paper or tiny."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """LMConfig fields for every setting (epochs, max_batches, ...)."""
    seeds: tuple[int, ...] = (0, 1, 2)
    kn_label: str | None = None
    """When set, the Kneser–Ney bigram's perplexity is a curve next to each induced metric."""
    y_label_text: str = "Perplexity"
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0

    kind: ClassVar[str] = "lm"
    size_name: ClassVar[str] = "epochs"
    own_options: ClassVar[tuple[str, ...]] = ("data", "preset")
    """``with_overrides`` sets these; LMConfig fields (``epochs``, ``max_batches``, ...)
    go to ``overrides``."""

    def __post_init__(self) -> None:
        check_name_and_labels(self.name, [s.label for s in self.settings])
        unknown = [m for m in self.metrics if m not in METRIC_NAMES]
        if not self.metrics or unknown:
            raise ValueError(
                f"metrics must be a non-empty list of {', '.join(METRIC_NAMES)}, got "
                f"{list(self.metrics)!r}"
            )
        if self.kn_label is not None and not self.induced_metrics:
            raise ValueError("kn_label needs an induced-bigram metric (induced_*_ppl)")
        check_seeds(list(self.seeds))
        check_resources(self.cpus_per_trial, self.gpus_per_trial)
        for setting in self.settings:
            self.config(setting, 0)

    @property
    def induced_metrics(self) -> tuple[str, ...]:
        return tuple(m for m in self.metrics if m.startswith("induced_"))

    @property
    def y_label(self) -> str:  # type: ignore[override]
        return self.y_label_text

    def config(self, setting: LMSetting, seed: int):
        """The LMConfig of one trial (checked: bad fields fail here, before Ray starts)."""
        from imm_ray.supervised.lm.train import LMConfig

        device = "cuda" if self.gpus_per_trial > 0 else "cpu"
        return LMConfig.preset(
            self.preset,
            **{**self.overrides, **setting.overrides},
            method=setting.method,
            seed=seed,
            device=device,
        )

    def curve(self, label: str, metric: str) -> str:
        return label if len(self.metrics) == 1 else f"{label}, {METRIC_NAMES[metric]}"

    def trial_curves(self, label: str) -> dict[str, dict[str, str]]:
        return {
            "curves": {m: self.curve(label, m) for m in self.metrics},
            "kn_curves": (
                {m: self.curve(self.kn_label, m) for m in self.induced_metrics}
                if self.kn_label
                else {}
            ),
        }

    def validate(self) -> None:
        """The data folder must hold a readable PTB corpus (checked before Ray starts)."""
        if not self.data:
            raise ValueError(f"{self.name} needs a PTB-format data folder: pass --data DIR")
        from imm_ray.supervised.lm.corpus import SPLITS, split_file

        folder = Path(self.data).expanduser()
        if not folder.is_dir():
            raise ValueError(f"data folder {folder} does not exist")
        for split in SPLITS:
            if not split_file(folder, split).is_file():
                raise ValueError(f"data folder {folder} has no {split}.txt")

    def load_inputs(self) -> dict[str, Any]:
        """``{"corpus": Corpus, "bigram": KneserNeyBigram}``: the data folder read, and its
        training split's Kneser–Ney bigram estimated, once for every trial."""
        from imm_ray.restricted.kneser_ney import estimate_kneser_ney
        from imm_ray.supervised.lm.corpus import load_corpus

        self.validate()
        corpus = load_corpus(Path(self.data).expanduser())
        bigram = estimate_kneser_ney(corpus.train, len(corpus.vocab), corpus.vocab.eos_id)
        return {"corpus": corpus, "bigram": bigram}

    def trainable(self) -> Callable[[dict[str, Any], dict[str, Any]], None]:
        return lm_trainable

    def curves(self) -> list[str]:
        curves = [self.curve(s.label, m) for s in self.settings for m in self.metrics]
        if self.kn_label:
            curves += [self.curve(self.kn_label, m) for m in self.induced_metrics]
        return curves

    def point(self, setting: str, size: int) -> tuple[str, float]:
        return setting, float(size)

    def x_label(self) -> str:
        return "Epoch"

    # The search interface (tuning.search).
    search_metrics: ClassVar[dict[str, str]] = {"valid_ppl": "min"}
    search_time: ClassVar[str] = "epoch"
    search_checkpoints: ClassVar[bool] = True

    def search_trial(self) -> dict[str, Any]:
        """The one (setting, seed) trial of the experiment's one sampled-IMM setting; its λ
        (``lam``) is the search's."""
        imm = [s for s in self.settings if s.method == "imm"]
        if len(self.settings) != 1 or not imm:
            raise ConfigError(
                "settings",
                "a search varies λ of one IMM setting: settings must list exactly one, with "
                f"method imm, got {len(self.settings)} ({len(imm)} with method imm)",
            )
        if len(self.seeds) != 1:
            raise ConfigError(
                "seeds",
                f"a search trains one seed per λ: seeds must list exactly one, got "
                f"{len(self.seeds)}",
            )
        return self.trials()[0]

    def search_points(self) -> list[int]:
        """Every epoch, 1 … epochs."""
        return list(range(1, self.config(self.settings[0], self.seeds[0]).epochs + 1))

    def search_budget(self, budget: int) -> LMExperiment:
        """Trained ``budget`` epochs (also where a setting set its own)."""
        checks.integer("epochs", budget, 1)
        settings = tuple(
            dataclasses.replace(
                s, overrides={k: v for k, v in s.overrides.items() if k != "epochs"}
            )
            for s in self.settings
        )
        return dataclasses.replace(self, settings=settings).with_overrides(epochs=budget)

    def search_trainable(self) -> Callable[[dict[str, Any], dict[str, Any]], None]:
        return lm_search_trainable


#: Seconds between a trial's progress lines inside an epoch (an IMM epoch can take an hour).
PROGRESS_SECONDS = 120.0


def trial_progress(setting: str, seed: str, stream: TextIO | None = None) -> Progress:
    """A trial's progress inside its epochs: plain lines on its stdout (``stream``), which
    Ray forwards to the driver's console, named by setting and seed; the first and each
    next one :data:`PROGRESS_SECONDS` apart (a short epoch prints none; the trainable
    prints each epoch's own line)."""
    return Progress(
        stream if stream is not None else sys.stdout,
        prefix=f"{setting} seed {seed}: ",
        every=PROGRESS_SECONDS,
        wait=PROGRESS_SECONDS,
        terminal=False,
    )


def _start_trial(trial: dict[str, Any], inputs: dict[str, Any], **changes: Any):
    """What an LM trial (a sweep's or a search's) starts with: its PID written, the
    trainer of its configuration (with ``changes``) on a copy of the corpus, and where it
    runs. Returns ``(trainer, placement)``."""
    import torch

    from imm_ray._memory import reuse_freed_memory
    from imm_ray.console import quiet_library_logs
    from imm_ray.supervised.lm.train import LMConfig, LMTrainer
    from tuning.placement import Placement, start_trial

    quiet_library_logs()
    start_trial()
    torch.set_num_threads(max(1, int(trial.get("cpus", 1))))
    lm_config = LMConfig(**{**trial["config"], **changes})
    where = Placement.of_trial(lm_config.device.startswith("cuda"))
    if where.gpu_unusable:
        lm_config = dataclasses.replace(lm_config, device="cpu")
    # Ray's object store hands out NumPy arrays read-only (shared by the node's trials);
    # torch, which wraps the corpus's id streams, needs writable ones: a copy of its own.
    corpus = copy.deepcopy(inputs["corpus"])
    reuse_freed_memory()  # the trial's worker process runs this trial alone
    return LMTrainer(lm_config, corpus, inputs["bigram"]), where


def _epoch_line(label: str, trainer: Any, metrics: dict[str, float]) -> None:
    """A trial's line after each epoch, on its stdout (Ray forwards it to the console)."""
    print(
        f"{label} epoch {trainer.epoch}/{trainer.config.epochs}: "
        f"valid ppl {metrics['valid_ppl']:.2f}, {metrics['epoch_seconds']:.0f} s",
        flush=True,
    )


def lm_trainable(config: dict[str, Any], inputs: dict[str, Any]) -> None:
    """Tune function trainable: one setting × one seed, a checkpoint after every epoch,
    on the corpus and bigram of ``inputs`` (:meth:`LMExperiment.load_inputs`).

    Writes its PID to ``trial.pid`` in the trial folder first. A restarted trial continues
    from ``tune.get_checkpoint()``: the trainer's own checkpoint, so the result is the
    one an uninterrupted trial gives (also when it was taken on another device). A trial
    given a GPU that torch cannot use trains on CPU (:mod:`tuning.placement`).
    """
    from ray import tune

    trial = config["trial"]
    trainer, where = _start_trial(trial, inputs)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            trainer.restore(folder)
    seed = str(trial["seed"])
    needs_induced = any(m.startswith("induced_") for m in trial["curves"])
    progress = trial_progress(trial["setting"], seed)
    epochs = trainer.config.epochs
    while trainer.epoch < epochs:
        metrics = trainer.train_epoch(progress=progress)
        _epoch_line(f"{trial['setting']} seed {seed}", trainer, metrics)
        values = dict(metrics)
        if trainer.epoch == epochs:
            values.update(trainer.evaluate(induced=needs_induced))
        with tempfile.TemporaryDirectory() as folder:
            trainer.save(folder)
            report_epoch(trial, values, trainer.epoch, folder, where.row())


def report_epoch(
    trial: dict[str, Any],
    values: dict[str, float],
    epoch: int,
    checkpoint: str | Path,
    extra: dict[str, Any],
) -> None:
    """Reports an LM trial's epoch to Tune: a row per curve of ``trial`` whose metric is in
    ``values`` (the Kneser–Ney curves read ``kn_*`` for their ``induced_*``), each with all
    of ``values`` and ``extra``, the last with the checkpoint in folder ``checkpoint``."""
    from ray import tune

    from tuning.checkpoints import report_checkpoint

    seed = str(trial["seed"])
    rows = [
        {"setting": curve, "values": {seed: float(values[m])}}
        for m, curve in trial["curves"].items()
        if m in values
    ]
    rows += [
        {"setting": curve, "values": {seed: float(values[m.replace("induced_", "kn_")])}}
        for m, curve in trial["kn_curves"].items()
        if m.replace("induced_", "kn_") in values
    ]
    scalars = {k: float(v) for k, v in values.items()}
    for i, row in enumerate(rows or [{}]):
        last = i == max(len(rows), 1) - 1
        report_checkpoint(
            {"size": epoch, **row, **scalars, **extra},
            tune.Checkpoint.from_directory(str(checkpoint)) if last else None,
        )


#: A search trial's history in its checkpoints, beside the trainer's ``checkpoint.pt``.
SEARCH_HISTORY_FILE = "search.json"


def lm_search_trainable(config: dict[str, Any], inputs: dict[str, Any]) -> None:
    """Tune function trainable of an LM search (:mod:`tuning.search`): the trial of
    :meth:`LMExperiment.search_trial` at the searched λ, reporting after every epoch with
    a checkpoint.

    A checkpoint is the trainer's own and the trial's history (``search.json``: λ from
    which epoch on, and the validation perplexity at each epoch). A trial restarted from
    one, its own or (under population-based training) another member's, continues that
    training exactly with this config's λ from then on: the schedule gets an entry where λ
    changes.

    Every result carries ``epoch``, ``valid_ppl`` and the epoch's other metrics, ``lambda``
    and ``r`` (now), ``index``, ``schedule`` (``[[from_epoch, λ], ...]``) and ``curves``
    (``{"valid_ppl": [[epoch, valid_ppl], ...]}``, along the lineage).
    """
    from ray import tune

    from imm_ray.imm.weighting import lambda_to_ratio
    from tuning.checkpoints import report_checkpoint
    from tuning.search import searched_lambda
    from tuning.search_algorithms import INDEX

    trial = config["trial"]
    lam = searched_lambda(config)
    trainer, where = _start_trial(trial, inputs, lam=lam)
    schedule: list[list[float]] = [[0, lam]]
    curve: list[list[float]] = []
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            # The checkpoint may be another member's, trained with another λ: this one's
            # λ (the trainer's config) trains from here on.
            trainer.restore(folder, free=("lam",))
            history = json.loads((Path(folder) / SEARCH_HISTORY_FILE).read_text())
        schedule, curve = history["schedule"], history["curve"]
        if lam != schedule[-1][1]:
            schedule.append([trainer.epoch, lam])
    seed = str(trial["seed"])
    progress = trial_progress(trial["setting"], seed)
    while trainer.epoch < trainer.config.epochs:
        metrics = trainer.train_epoch(progress=progress)
        _epoch_line(f"{trial['setting']} λ={lam:.4g} seed {seed}", trainer, metrics)
        curve.append([trainer.epoch, float(metrics["valid_ppl"])])
        history = {"schedule": schedule, "curve": curve, "lambda": lam}
        report = {
            **{k: float(v) for k, v in metrics.items()},
            "epoch": trainer.epoch,
            "lambda": lam,
            "r": lambda_to_ratio(lam),
            INDEX: int(config[INDEX]),
            "schedule": [list(item) for item in schedule],
            "curves": {"valid_ppl": [list(item) for item in curve]},
            # The last epoch's result ends the trial: PBT would otherwise perturb there
            # too, and a member that copied another's last checkpoint would end untrained
            # with the other's result (a function trainable's own end comes after it).
            "done": trainer.epoch >= trainer.config.epochs,
            **where.row(),
        }
        with tempfile.TemporaryDirectory() as folder:
            trainer.save(folder)
            (Path(folder) / SEARCH_HISTORY_FILE).write_text(json.dumps(history))
            report_checkpoint(report, tune.Checkpoint.from_directory(folder))


EXPERIMENT_CLASS = LMExperiment
_IMM = LMSetting("IMM with KN bigram", "imm")
EXPERIMENTS: dict[str, LMExperiment] = {
    "table1": LMExperiment(
        "table1",
        (
            LMSetting("None (only regular dropout)", "none"),
            LMSetting("KN noising", "noising"),
            _IMM,
            LMSetting("Serialized IMM with KN bigram", "serialized"),
        ),
        metrics=("valid_ppl", "test_ppl", "induced_test_ppl"),
        kn_label="Kneser–Ney bigram",
    ),
    "table5": LMExperiment(
        "table5",
        (LMSetting("LSTM w/o IMM", "none"), LMSetting("LSTM w/ IMM", "imm")),
        metrics=("induced_train_ppl", "induced_valid_ppl", "induced_test_ppl"),
        kn_label="Kneser–Ney",
        y_label_text="Induced-bigram perplexity",
    ),
    "lm-lambda": LMExperiment(
        "lm-lambda",
        tuple(LMSetting(f"λ={lam}", "imm", {"lam": lam}) for lam in (0.05, 0.2, 0.5, 1.0)),
        metrics=("valid_ppl",),
        seeds=(0,),
    ),
}
"""Table 1 (perplexity by method), Table 5 (induced bigram vs Kneser–Ney), and λ."""
