"""Across-seed statistics of the tables and figures, checked by hand."""

from __future__ import annotations

import pytest

from tuning.aggregate import format_table, summarize


def test_summary_is_mean_and_percentiles_across_seeds():
    values = [float(v) for v in range(11)]  # seeds' mean rewards 0..10
    records = [("imm", 50, v) for v in values] + [("no-imm", 50, 1.0), ("imm", 10, 2.0)]
    rows = summarize(records)
    assert [(r.size, r.setting) for r in rows] == [(10, "imm"), (50, "imm"), (50, "no-imm")]
    imm50 = rows[1]
    assert imm50.mean == pytest.approx(5.0)
    # numpy's linear percentile of 0..10: the 10th is 1.0, the 90th 9.0.
    assert (imm50.p10, imm50.p90, imm50.seeds) == (pytest.approx(1.0), pytest.approx(9.0), 11)
    assert (rows[2].mean, rows[2].p10, rows[2].p90, rows[2].seeds) == (1.0, 1.0, 1.0, 1)


def test_table_has_a_header_rule_and_one_line_per_setting():
    table = format_table(summarize([("imm", 50, 9.0), ("imm", 50, 8.0)])).splitlines()
    assert table[0].split() == ["epochs", "method", "mean", "reward", "p10", "p90", "seeds"]
    assert set(table[1].replace(" ", "")) == {"-"}
    assert table[2].split() == ["50", "imm", "8.500", "8.100", "8.900", "2"]
