"""Results as data: every per-seed value behind a stored sweep, as a pandas DataFrame.

::

    from imm_ray import results

    frame = results.load("runs/figure4")          # or "s3://bucket/runs/figure4"
    frame.groupby(["setting", "epochs"])["value"].mean()

:func:`load` reads the trials Tune stored for a sweep (``imm-ray sweep``; a local folder or
a storage URI) and returns one row per (setting, size, seed): the numbers ``summary.csv``
aggregates, with where each trial ran. ``imm-ray report PATH --format csv|json`` prints the
same table, ``--format md`` the summary.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from tuning.storage import Location


def load(path: str | os.PathLike[str] | Location) -> pd.DataFrame:
    """The per-seed values of the sweep stored at ``path`` (``STORAGE/NAME``, a local path
    or a URI such as ``s3://bucket/runs/figure4``), one row per (setting, size, seed):

    - ``setting``: the curve (a setting's label; for a language-model sweep, the setting
      and the metric it reports, as in ``summary.csv``);
    - the experiment's size column, named as in ``summary.csv`` (``epochs``, or ``n`` for
      logistic regression);
    - ``seed``: the seed (or, for logistic regression, the Monte Carlo run), an integer;
    - ``value``: the seed's metric (NaN where its training failed), what ``summary.csv``
      averages;
    - ``node_id`` and ``device``: where the trial ran (``None`` where it did not say).

    Rows come in the experiment's order of settings, then by size and seed. A partial
    sweep (killed, or still running) gives the rows it has. A ``ValueError`` (naming the
    folder) where ``path`` holds no sweep or no finished result yet."""
    import pandas as pd

    from tuning.report import ReportError, load_saved_experiment, per_seed, read_trials
    from tuning.storage import check_readable, resolve

    folder = resolve(path, option=None)
    check_readable(folder)
    experiment = load_saved_experiment(folder)
    size = experiment.size_name
    records = [
        {
            "setting": setting,
            size: at,
            "seed": int(seed),
            "value": float(value),
            "node_id": row.get("node_id"),
            "device": row.get("device"),
        }
        for (setting, at, seed), (value, row) in per_seed(read_trials(folder)).items()
    ]
    if not records:
        raise ReportError(f"{folder} holds no finished trial results yet")
    order = {label: i for i, label in enumerate(s.label for s in experiment.settings)}

    def place(record: dict[str, Any]) -> tuple:
        setting = record["setting"]
        return (order.get(setting, len(order)), setting, record[size], record["seed"])

    rows = sorted(records, key=place)
    return pd.DataFrame(rows, columns=["setting", size, "seed", "value", "node_id", "device"])
