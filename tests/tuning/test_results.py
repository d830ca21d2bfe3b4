"""Results as data (imm_ray.results): the per-seed frame of a stored sweep of every kind
aggregates to its summary.csv, and ``imm-ray report --format`` prints it (csv, json) or
the summary (md) without writing anything. On S3: tests/tuning/test_storage.py."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sweep_drivers import imm_ray

from imm_ray import results
from tuning.kinds import KIND_MODULES


def assert_aggregates_to(frame: pd.DataFrame, summary_csv: str) -> None:
    """Each (setting, size) of ``summary.csv`` is the mean, 10th and 90th percentiles,
    count (and, where given, sample standard deviation) of the frame's finite values of
    that setting and size; the frame has no other cells and one row per seed."""
    summary = pd.read_csv(io.StringIO(summary_csv))
    size = summary.columns[1]
    assert list(frame.columns) == ["setting", size, "seed", "value", "node_id", "device"]
    assert not frame.duplicated(["setting", size, "seed"]).any()
    cells = {key: group["value"].to_numpy() for key, group in frame.groupby(["setting", size])}
    assert set(cells) == set(zip(summary["setting"], summary[size], strict=True))
    for row in summary.to_dict("records"):
        values = cells[(row["setting"], row[size])]
        finite = values[np.isfinite(values)]
        assert len(finite) == row["seeds"], row
        p10, p90 = np.percentile(finite, [10, 90])
        assert (np.mean(finite), p10, p90) == pytest.approx(
            (row["mean"], row["p10"], row["p90"]), abs=5e-5
        ), row
        if "std" in row:
            spread = np.std(finite, ddof=1) if len(finite) > 1 else 0.0
            assert spread == pytest.approx(row["std"], abs=5e-5), row


def stored_sweep(storage: Path) -> Path:
    (experiment,) = storage.glob("*/experiment.json")
    return experiment.parent


@pytest.mark.parametrize("kind", list(KIND_MODULES))
def test_the_per_seed_frame_of_a_sweep_of_every_kind_aggregates_to_its_summary(kind, tiny_sweeps):
    run = tiny_sweeps(kind)
    assert run.result.returncode == 0, run.result.stderr[-3000:]
    folder = stored_sweep(run.storage)
    frame = results.load(folder)
    assert_aggregates_to(frame, (folder / "summary.csv").read_text())
    assert frame["node_id"].notna().all() and set(frame["device"]) == {"cpu"}
    assert frame["seed"].dtype.kind == "i"


def test_report_prints_the_frame_or_the_summary_and_writes_nothing(tiny_sweeps, tmp_path):
    folder = stored_sweep(tiny_sweeps("rl").storage)
    before = {p: p.stat().st_mtime_ns for p in folder.rglob("*")}
    frame = results.load(folder)
    printed = {}
    for form in ("csv", "json", "md"):
        run = imm_ray("report", str(folder), "--format", form)
        assert run.returncode == 0 and not run.stderr.strip(), run.stderr
        printed[form] = run.stdout
    assert printed["csv"] == frame.to_csv(index=False)
    records = json.loads(printed["json"])
    assert records == json.loads(frame.to_json(orient="records"))
    assert len(records) == 2 * 2 * 2  # settings × epoch counts × seeds
    assert printed["md"] == (folder / "summary.md").read_text()
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*")} == before


def test_bad_report_requests_exit_2_naming_what_is_wrong(tiny_sweeps, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = {
        (str(stored_sweep(tiny_sweeps("rl").storage)), "--format", "xml"): "--format: invalid",
        (str(empty), "--format", "csv"): "holds no sweep",
    }
    for args, message in cases.items():
        run = imm_ray("report", *args)
        assert run.returncode == 2 and message in run.stderr, (args, run.stderr)
        assert "Traceback" not in run.stderr
    with pytest.raises(ValueError, match="holds no sweep"):
        results.load(empty)
