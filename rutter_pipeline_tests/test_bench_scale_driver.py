"""benchmarks/bench_scale.py joins its two parts' JSON; their stdout may carry log lines before it.

Each part has its own smoke test (test_bench_scale_dagster.py, test_bench_scale_e2e.py); this one
checks what the driver adds: finding each part's JSON object in what it printed.
"""

import importlib.util
from pathlib import Path

import pytest

SPEC = importlib.util.spec_from_file_location(
    "bench_scale", Path(__file__).resolve().parents[1] / "benchmarks" / "bench_scale.py"
)
bench_scale = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(bench_scale)


def test_the_last_json_object_is_found_after_log_lines_pretty_printed_or_not() -> None:
    logged = "2026-12-04 - dagster.code_server - INFO - Started\n{not json, a log line}\n"
    assert bench_scale.last_json_object(logged + '{"connections": 3, "ticks": {"a": 1}}\n') == {
        "connections": 3,
        "ticks": {"a": 1},
    }
    assert bench_scale.last_json_object(logged + '{\n  "connections": 5,\n  "x": [1, 2]\n}\n') == {
        "connections": 5,
        "x": [1, 2],
    }
    with pytest.raises(ValueError, match="no JSON object"):
        bench_scale.last_json_object("only log lines\n")
