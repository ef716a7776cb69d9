"""``python -m lra.overhead`` end to end on a tiny config (a smoke test: speed goals live in the
benchmark's own output, never in test assertions)."""

from __future__ import annotations

import json

from lra import overhead


def test_overhead_benchmark_writes_both_rates(tmp_path, listops_args, capsys):
    tiny = [a for a in listops_args if not a.startswith(("task=", "experiment=", "trainer.", "speed_"))]
    out = tmp_path / "overhead"
    argv = ["--steps", "6", "--warmup", "2", "--repeats", "1", "--device", "cpu", "--out", str(out), *tiny]
    assert overhead.main([*argv, "logger=csv"]) == 0
    result = json.loads((out / "overhead.json").read_text())
    (pair,) = result["pairs"]
    assert pair["bare_steps_per_s"] > 0 and pair["harness_steps_per_s"] > 0
    assert result["ratio_harness_to_bare"] == pair["harness_steps_per_s"] / pair["bare_steps_per_s"]
    assert "harness / bare steps/s" in capsys.readouterr().out
