"""GLUE tasks in GLUE's own TSV layouts (CoLA, MRPC, QNLI, RTE), the acceptability task, and
tasks described by a JSON file.

A task folder holds ``train.tsv`` and ``dev.tsv`` (and optionally ``test.tsv``), read
tab-separated with no quoting, as GLUE's files are. The layouts:

=============  ======  =============================  ==========================  ========
task           header  text (and second text)         label                       metric
=============  ======  =============================  ==========================  ========
cola           no      column 3                       column 1: 0 / 1             MCC
mrpc           yes     ``#1 String``, ``#2 String``   ``Quality``: 0 / 1          F1
qnli           yes     ``question``, ``sentence``     entailment / not_entailment accuracy
rte            yes     ``sentence1``, ``sentence2``   entailment / not_entailment accuracy
acceptability  no      as cola (``make-acceptability``)                           MCC
=============  ======  =============================  ==========================  ========

GLUE's own test files carry no labels (CoLA's is ``index  sentence``): such a test split is
read without labels and not scored. A JSON task file gives the same fields as
:class:`TaskSpec` (``name``, ``header``, ``text_a``, ``text_b``, ``label``, ``labels``,
``metric``). With no folder, the GLUE tasks are read from the ``datasets`` cache when
``datasets`` is installed and holds them; nothing is ever downloaded.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from imm_ray import checks
from imm_ray.supervised.bert.metrics import METRICS

SPLIT_FILES = {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}
_ENTAIL = ("entailment", "not_entailment")


@dataclass(frozen=True)
class TaskSpec:
    """Where a task's texts and labels are in its TSV files, and how it is scored."""

    name: str
    header: bool
    """Whether the files start with a header row (columns are then named, else numbered)."""
    text_a: str | int
    text_b: str | int | None
    """The second text of a pair task; None for single-sentence tasks."""
    label: str | int
    labels: tuple[str, ...]
    """The label strings; label id i is ``labels[i]``."""
    metric: str
    glue_name: str | None = field(default=None, compare=False)
    """The task's name in the ``datasets`` GLUE cache, if it is a GLUE task."""

    def __post_init__(self) -> None:
        checks.one_of("metric", self.metric, METRICS)
        if len(self.labels) < 2 or len(set(self.labels)) != len(self.labels):
            raise ValueError(f"labels must be >= 2 distinct strings, got {list(self.labels)!r}")
        if self.metric in ("mcc", "f1") and len(self.labels) != 2:
            raise ValueError(f"metric {self.metric} needs exactly 2 labels")
        for name in ("text_a", "text_b", "label"):
            value = getattr(self, name)
            if value is None and name == "text_b":
                continue
            if not (isinstance(value, str) if self.header else checks.is_integer(value)):
                what = "column names" if self.header else "column numbers"
                raise ValueError(f"{name} must be one of the files' {what}, got {value!r}")

    @property
    def num_labels(self) -> int:
        return len(self.labels)


TASKS: dict[str, TaskSpec] = {
    "cola": TaskSpec("cola", False, 3, None, 1, ("0", "1"), "mcc", "cola"),
    "mrpc": TaskSpec("mrpc", True, "#1 String", "#2 String", "Quality", ("0", "1"), "f1", "mrpc"),
    "qnli": TaskSpec("qnli", True, "question", "sentence", "label", _ENTAIL, "accuracy", "qnli"),
    "rte": TaskSpec("rte", True, "sentence1", "sentence2", "label", _ENTAIL, "accuracy", "rte"),
    "acceptability": TaskSpec("acceptability", False, 3, None, 1, ("0", "1"), "mcc"),
}


@dataclass(frozen=True)
class Split:
    """One split's texts and label ids (None: an unlabeled test split)."""

    text_a: list[str]
    text_b: list[str] | None
    labels: list[int] | None

    def __len__(self) -> int:
        return len(self.text_a)


def task_spec(task: str) -> TaskSpec:
    """A named task (:data:`TASKS`) or a JSON task file."""
    if task in TASKS:
        return TASKS[task]
    path = Path(task)
    if path.suffix == ".json" and path.is_file():
        try:
            data = json.loads(path.read_text())
            data["labels"] = tuple(data["labels"])
            return TaskSpec(**{"text_b": None, **data})
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"task file {path}: not a task description ({err})") from None
    raise ValueError(f"task must be one of {', '.join(TASKS)} or a .json task file, got {task!r}")


def _read_rows(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        return [row for row in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE) if row]


def _column(spec: TaskSpec, header: list[str] | None, column: str | int, path: Path) -> int:
    if header is None:
        return int(column)
    if column not in header:
        raise ValueError(
            f"task {spec.name}: {path} has no column {column!r} (its header: {', '.join(header)})"
        )
    return header.index(column)


def read_split(spec: TaskSpec, path: Path, split: str) -> Split:
    """One TSV file of the task, checked: columns present, labels known."""
    rows = _read_rows(path)
    if not rows:
        raise ValueError(f"task {spec.name}: {path} is empty")
    # GLUE's test files hold no labels; CoLA's has a header although its other files do not.
    unlabeled_cola = not spec.header and split == "test" and rows[0][:2] == ["index", "sentence"]
    header = rows[0] if spec.header or unlabeled_cola else None
    body = rows[1:] if header is not None else rows
    labeled = not unlabeled_cola and not (
        split == "test" and header is not None and spec.label not in header
    )
    text_a_col = "sentence" if unlabeled_cola else spec.text_a
    a = _column(spec, header, text_a_col, path)
    b = None if spec.text_b is None else _column(spec, header, spec.text_b, path)
    y = _column(spec, header, spec.label, path) if labeled else None
    needed = max(c for c in (a, b, y) if c is not None) + 1
    text_a, text_b, labels = [], [] if b is not None else None, [] if labeled else None
    for number, row in enumerate(body, 2 if header is not None else 1):
        if len(row) < needed:
            raise ValueError(
                f"task {spec.name}: {path}:{number} has {len(row)} fields, needs {needed}"
            )
        text_a.append(row[a])
        if text_b is not None:
            text_b.append(row[b])  # type: ignore[index]
        if labels is not None:
            if row[y] not in spec.labels:  # type: ignore[index]
                raise ValueError(
                    f"task {spec.name}: {path}:{number}: label {row[y]!r} is not one of "  # type: ignore[index]
                    f"{', '.join(spec.labels)}"
                )
            labels.append(spec.labels.index(row[y]))  # type: ignore[index]
    if not text_a:
        raise ValueError(f"task {spec.name}: {path} holds no examples")
    return Split(text_a, text_b, labels)


def load_task(spec: TaskSpec, folder: str | Path | None) -> dict[str, Split]:
    """``{"train", "dev"[, "test"]}`` of the task from ``folder`` (or the datasets cache)."""
    if folder is None:
        return _from_datasets_cache(spec)
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise ValueError(f"task {spec.name}: data folder {folder} does not exist")
    for split in ("train", "dev"):
        if not (folder / SPLIT_FILES[split]).is_file():
            raise ValueError(f"task {spec.name}: {folder} has no {SPLIT_FILES[split]}")
    splits = {}
    for split, name in SPLIT_FILES.items():
        if (folder / name).is_file():
            splits[split] = read_split(spec, folder / name, split)
    if splits["dev"].labels is None:
        raise ValueError(f"task {spec.name}: {folder / 'dev.tsv'} has no labels")
    return splits


#: GLUE's columns in the ``datasets`` cache (``nyu-mll/glue``), per task.
_GLUE_COLUMNS = {
    "cola": ("sentence", None),
    "mrpc": ("sentence1", "sentence2"),
    "qnli": ("question", "sentence"),
    "rte": ("sentence1", "sentence2"),
}


def _from_datasets_cache(spec: TaskSpec) -> dict[str, Split]:
    """GLUE from ``datasets``' local cache (``nyu-mll/glue``, as ``load_dataset`` leaves it
    after one online call), offline whatever ``HF_HUB_OFFLINE`` says; a ValueError when it
    is not there. The labels are those of GLUE's TSV files (QNLI and RTE: 0 entailment,
    1 not_entailment); a split whose labels are all -1 (GLUE's test) is unlabeled."""
    if spec.glue_name is None:
        raise ValueError(f"task {spec.name} needs --data: a folder with train.tsv and dev.tsv")
    try:
        import datasets
    except ImportError:
        raise ValueError(
            f"task {spec.name} needs --data (a folder of GLUE TSV files): the datasets "
            "package, whose cache could stand in, is not installed"
        ) from None
    # datasets reads HF_HUB_OFFLINE when it is imported; its loaders read this flag at
    # each call, so setting it here keeps them off the network even after an import.
    offline, verbosity = datasets.config.HF_HUB_OFFLINE, datasets.logging.get_verbosity()
    datasets.config.HF_HUB_OFFLINE = True
    datasets.logging.set_verbosity_error()  # "using the latest cached version" on every load
    try:
        glue = datasets.load_dataset("nyu-mll/glue", spec.glue_name)
    except Exception as err:  # datasets raises many kinds when the cache lacks a dataset
        raise ValueError(
            f"task {spec.name}: not in the datasets cache {datasets.config.HF_DATASETS_CACHE} "
            f"({type(err).__name__}); pass --data, a folder of GLUE TSV files"
        ) from None
    finally:
        datasets.config.HF_HUB_OFFLINE = offline
        datasets.logging.set_verbosity(verbosity)
    columns = _GLUE_COLUMNS[spec.glue_name]
    splits = {}
    for ours, theirs in (("train", "train"), ("dev", "validation"), ("test", "test")):
        if theirs not in glue:
            if ours == "test":
                continue
            raise ValueError(f"task {spec.name}: the datasets cache has no {theirs} split")
        data = glue[theirs]
        missing = [c for c in (*columns, "label") if c is not None and c not in data.column_names]
        if missing:
            raise ValueError(
                f"task {spec.name}: the cached {theirs} split lacks column(s) "
                f"{', '.join(missing)} (it has {', '.join(data.column_names)})"
            )
        labels = [int(y) for y in data["label"]]
        if any(not -1 <= y < spec.num_labels for y in labels):
            raise ValueError(
                f"task {spec.name}: the cached {theirs} split has labels outside "
                f"0..{spec.num_labels - 1}"
            )
        splits[ours] = Split(
            list(data[columns[0]]),
            None if columns[1] is None else list(data[columns[1]]),
            None if all(y < 0 for y in labels) else labels,
        )
    if splits["dev"].labels is None:
        raise ValueError(f"task {spec.name}: the cached validation split has no labels")
    return splits
