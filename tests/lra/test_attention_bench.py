"""Smoke tests of the attention benchmarks (tiny sizes) and of the q/k/v capture hooks."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from attention import NystromAttention, SoftmaxAttention
from lra.bench import efficiency, fidelity
from lra.bench.__main__ import main as bench_main
from lra.bench.capture import capture_model
from lra.bench.regimes import REGIMES, diagonal_mass, exact_attention, make_regime


def test_fidelity_smoke(tmp_path, capsys):
    argv = ["fidelity", "--lengths", "48,96", "--landmarks", "16", "--dim", "8", "--temperatures", "0.5,1"]
    argv += [
        "--table-length",
        "96",
        "--out",
        str(tmp_path),
        "--settings",
        "ss-core-trace-free,ss-diagonal-trace-free",
    ]
    assert bench_main(argv) == 0
    record = json.loads((tmp_path / "fidelity.json").read_text())
    assert (tmp_path / "fidelity.png").stat().st_size > 0
    settings = {r["setting"] for r in record["rows"]}
    assert settings == {"nystrom", "ss-core-trace-free", "ss-diagonal-trace-free"}
    assert len(record["rows"]) == len(REGIMES) * 2 * 2 * 3  # regimes x temperatures x lengths x settings
    assert all(r["ratio"] == 1.0 for r in record["rows"] if r["setting"] == "nystrom")
    assert "| self |" in capsys.readouterr().out


def test_efficiency_smoke(tmp_path):
    argv = ["--lengths", "64,128", "--batch", "1", "--landmarks", "16", "--reps", "2", "--devices", "cpu"]
    argv += ["--variants", "softmax,nystrom,spectral_shift", "--no-memory", "--out", str(tmp_path)]
    assert efficiency.main(argv) == 0
    record = json.loads((tmp_path / "efficiency.json").read_text())
    rows = record["results"]["cpu"]
    expected = {(v, n) for v in ("softmax", "nystrom", "spectral_shift") for n in (64, 128)}
    assert {(r["variant"], r["n"]) for r in rows} == expected
    for r in rows:
        assert r["time_s"] > 0 and len(r["time_samples_s"]) == 2
    assert all(r["ratio_to_nystrom"] == 1.0 for r in rows if r["variant"] == "nystrom")
    assert (tmp_path / "efficiency.png").stat().st_size > 0


def test_step_smoke(tmp_path):
    argv = ["step", "--tasks", "listops", "--attentions", "softmax,nystrom", "--reps", "2", "--warmup", "1"]
    argv += ["--set", "model.max_len=96", "--set", "data.batch_size=2", "--threads", "1"]
    argv += ["--out", str(tmp_path)]
    assert bench_main(argv) == 0
    record = json.loads((tmp_path / "step.json").read_text())
    rows = {r["attention"]: r for r in record["rows"]}
    assert set(rows) == {"softmax", "nystrom"} and rows["nystrom"]["ratio"] == 1.0
    for r in rows.values():
        assert r["time_s"] > 0 and r["flops"] > 0 and r["peak_bytes"] > 0 and (r["batch"], r["n"]) == (2, 96)
    assert record["gemm_gflops_per_s"] > 0 and record["threads"] == 1
    for r in rows.values():  # the run estimate: 5,000 steps of this step time, and its evaluations
        assert r["eval_batch_s"] > 0 and r["estimate"]["train_s"] == pytest.approx(5000 * r["time_s"])
        assert r["estimate"]["run_s"] > r["estimate"]["train_s"]
    report = (tmp_path / "step.md").read_text()
    assert "| listops | nystrom | 2 x 96 |" in report and "| softmax | " in report.split("hours:")[1]


def test_step_times_variants_with_their_own_overrides(tmp_path):
    argv = ["step", "--tasks", "listops", "--attentions", "nystrom,nystrom:conv_kernel=0,model.dropout=0"]
    argv += ["--reps", "2", "--warmup", "1", "--no-memory", "--threads", "1", "--out", str(tmp_path)]
    argv += ["--set", "model.max_len=96", "--set", "data.batch_size=2"]
    assert bench_main(argv) == 0
    rows = {r["attention"]: r for r in json.loads((tmp_path / "step.json").read_text())["rows"]}
    assert set(rows) == {"nystrom", "nystrom:conv_kernel=0,model.dropout=0"}
    # Without the conv skip the step has fewer matrix products: the override reached the model.
    assert rows["nystrom:conv_kernel=0,model.dropout=0"]["flops"] < rows["nystrom"]["flops"]
    variant = rows["nystrom:conv_kernel=0,model.dropout=0"]
    assert len(variant["time_samples_s"]) == 2 and rows["nystrom"]["difference_s"] == 0.0
    paired = [
        a - b for a, b in zip(variant["time_samples_s"], rows["nystrom"]["time_samples_s"], strict=True)
    ]
    assert variant["difference_s"] == pytest.approx(sum(paired) / 2)  # the median of two pairs


def test_step_times_every_attention_of_the_registry_by_default():
    from lra.bench import step
    from lra.registry import attention_names

    assert step.parse_args([]).attentions == attention_names()


def test_both_benchmarks_time_with_one_timer():
    """Efficiency and step share lra/bench/timing.py's timer: the same clock for a layer and a step."""
    import time

    from lra.bench import step, timing

    assert efficiency.timer is step.timer is timing.timer
    assert timing.timer("cpu")(lambda: time.sleep(0.01)) >= 0.01


def test_step_variant_errors_name_the_knob():
    from lra.bench.step import compose, variant_overrides

    with pytest.raises(ValueError, match=r"'conv_kernal' is not a knob of conf/attention/nystrom.yaml"):
        variant_overrides("nystrom:conv_kernal=0")
    with pytest.raises(ValueError, match="expected key=value"):
        variant_overrides("nystrom:conv_kernel")
    cfg = compose("listops", "spectral_shift:window=4,model.dropout=0", ["model.dropout=0.3"])
    assert cfg.attention.window == 4 and cfg.model.dropout == 0  # the variant's own override wins


def test_cpu_peak_memory_is_measured_in_a_fresh_process():
    args = efficiency.parse_args(["--batch", "4", "--landmarks", "16"])
    small = efficiency.measure_memory("nystrom", 1024, args, "cpu")  # subprocess
    assert small["peak_bytes"] is not None and "VmHWM" in small["method"]
    # The forward+backward needs at least the gradients of q, k, v (4 x 2 x 1024 x 32 fp32 each).
    assert small["peak_bytes"] >= 3 * 4 * 2 * 1024 * 32 * 4
    big = efficiency.measure_memory("nystrom", 4096, args, "cpu")  # grows with n
    assert big["peak_bytes"] > 2 * small["peak_bytes"]


def test_package_reference_row_runs_on_our_inputs():
    q, k, v, grad = efficiency.make_inputs(1, 2, 128, 8, "cpu")
    module = efficiency.build("nystrom-attention-pkg", 2, 8, 16)
    efficiency.step(module, q, k, v, grad)
    assert torch.isfinite(q.grad).all()


def test_regimes_behave_as_named():
    q, k, v = make_regime("self", 1, 2, 256, 64, temperature=0.5)
    assert diagonal_mass(q, k) > 0.9
    q, k, v = make_regime("random", 1, 2, 256, 64, temperature=1.0)
    assert diagonal_mass(q, k) < 0.05
    mask = torch.arange(256)[None, :] < 200
    ref = exact_attention(q, k, v, mask)
    torch.testing.assert_close(
        ref[:, :, :200], SoftmaxAttention(2, 64, dropout=0.0)(q, k, v, mask)[:, :, :200]
    )


def test_local_regimes_attend_over_their_bump_widths():
    """local-narrow, local and local-wide (bumps 2, 8 and 32 tokens wide): at T = 0.5 the mean distance
    a token attends over grows with the width (about 0.6, 1.7 and 6.4 positions)."""
    from attention.reference import dense_softmax_weights

    n = 512
    offset = (torch.arange(n)[:, None] - torch.arange(n)[None, :]).abs().double()
    reach = {}
    for name in ("local-narrow", "local", "local-wide"):
        q, k, _ = make_regime(name, 1, 2, n, 64, temperature=0.5)
        reach[name] = (dense_softmax_weights(q, k) * offset).sum(-1).mean().item()  # mean |i - j|
    assert reach["local-narrow"] < reach["local"] < reach["local-wide"]
    assert reach["local-narrow"] < 1 and reach["local-wide"] > 4


class TinyModel(nn.Module):
    """Stands in for models.transformer.LRATransformer: named_attention() and a forward that calls
    each attention core with (q, k, v, mask)."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 3 * 8)
        self.cores = nn.ModuleList([NystromAttention(2, 4, num_landmarks=4), SoftmaxAttention(2, 4)])

    def named_attention(self):
        for i, core in enumerate(self.cores):
            yield f"layer{i}", core

    def forward(self, input_ids, mask=None):
        x = torch.nn.functional.one_hot(input_ids, 8).float()
        for core in self.cores:
            q, k, v = (t.view(*x.shape[:2], 2, 4).transpose(1, 2) for t in self.proj(x).chunk(3, -1))
            x = x + core(q, k, v, key_padding_mask=mask).transpose(1, 2).reshape(x.shape)
        return x.mean(1)


def test_capture_records_each_layer_and_checkpoint_rows(tmp_path):
    model = TinyModel()
    batch = {
        "input_ids": torch.randint(0, 8, (3, 20)),
        "mask": torch.arange(20)[None, :] < torch.tensor([[20], [15], [9]]),
        "label": torch.zeros(3),
    }
    captured = capture_model(model, batch)
    assert list(captured) == ["layer0", "layer1"]
    q, k, v, mask = captured["layer0"][0]
    assert q.shape == (3, 2, 20, 4) and torch.equal(mask, batch["mask"])
    assert not model.cores[0]._forward_pre_hooks  # hooks removed afterwards
    args = fidelity.parse_args(["--landmarks", "4", "--settings", "ss-core-trace-free"])
    settings = {k: v for k, v in fidelity_settings_subset(args).items()}
    rows = fidelity.run_checkpoint(args, settings, captured)
    assert {r["regime"] for r in rows} == {"checkpoint:layer0", "checkpoint:layer1"}
    assert all(r["error"] >= 0 for r in rows)


def fidelity_settings_subset(args):
    from lra.bench.settings import fidelity_settings

    return {k: v for k, v in fidelity_settings(args.landmarks).items() if k in ("nystrom", *args.settings)}


def test_gpu_check_orchestration_runs_on_cpu_at_toy_sizes(tmp_path):
    """``python -m lra.gpu_check`` runs on a GPU only when one is lent (first on 2026-11-28, an H200): its
    orchestration (every step, the three side-by-side ListOps runs, the dashboard, the summary) is
    exercised on the CPU at toy sizes."""
    import subprocess
    import sys

    from tests.helpers.cli import OFFLINE_ENV, REPO

    out = tmp_path / "check"
    cmd = [sys.executable, "-m", "lra.gpu_check", "--smoke", "--out", str(out), "--skip", "tests"]
    cmd += ["--run-set", "trainer.max_steps=3"]  # the runs' own overrides (the smoke runs' are 4 steps)
    env = {**__import__("os").environ, **OFFLINE_ENV}
    subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True, timeout=900)
    summary = json.loads((out / "summary.json").read_text())
    assert [s["exit"] for s in summary["steps"]] == [0, 0, 0]  # efficiency, step, compare
    assert {r["step"] for r in summary["listops"]} == {
        "listops/softmax",
        "listops/nystrom",
        "listops/spectral_shift",
    }
    assert all(r["status"] == "completed" and r["global_step"] == 3 for r in summary["listops"])
    assert (out / "compare" / "index.html").is_file() and (out / "summary.md").is_file()
    assert "| listops (h) |" in (out / "summary.md").read_text()  # the step benchmark's run estimate


def test_checkpoint_fidelity_uses_the_longest_validation_batch(tmp_path):
    """Evaluation batches are length-sorted; the captured batch is the one at the task's full length."""
    from hydra.utils import instantiate

    from lra.bench.capture import validation_batch
    from tests.helpers.listops import tiny_listops
    from tests.helpers.runs import compose_run

    cfg = compose_run(*tiny_listops(tmp_path / "data"), f"cache_dir={tmp_path / 'cache'}")
    batch = validation_batch(cfg, 4)
    datamodule = instantiate(cfg.data, num_workers=0)
    datamodule.prepare_data()
    datamodule.setup("validate")
    val = datamodule.splits["val"]
    longest = max(len(val[i]["input_ids"]) for i in range(len(val)))
    assert int(batch["mask"].sum(dim=1).max()) == longest and batch["label"].shape == (4,)
