"""The throughput script runs (the figures themselves are for the report, not asserted here)."""

from __future__ import annotations

from rutter_pipeline_tests.validation.measure_throughput import measure


def test_measure_prints_rates_for_a_small_batch(capsys):
    results = measure(orders=300, pages=[100], runs=1)
    assert len(results) == 3 and all(rate > 0 for rate in results.values())
    out = capsys.readouterr().out
    assert "one batch of 300" in out and "pages of 100" in out
