"""Fidelity: relative error ``||out - S V|| / ||S V||`` of each setting against exact softmax.

``python -m lra.bench fidelity [--lengths 256,1024,4096] [--checkpoint run/checkpoints/best.ckpt]``

Synthetic regimes (random, locally smooth, self-attending; several temperatures and lengths) and,
with ``--checkpoint``, the q/k/v each layer of a trained model receives on its own validation data.
Errors are measured on real (unpadded) positions, in float64 by default. Writes ``fidelity.json`` and
``fidelity.png`` under ``--out``; prints the table at ``--table-length``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch

from lra.bench.regimes import REGIMES, diagonal_mass, exact_attention, make_regime
from lra.bench.settings import fidelity_settings
from lra.errors import LRAError
from lra.registry import attention_names, build_attention

# Goals from the issue: spectral shift within 2% of Nyström on every regime, <= 0.2x on self-attending.
ELSEWHERE_RATIO = 1.02
SELF_RATIO = 0.2


def relative_error(out: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor | None) -> float:
    if mask is not None:
        keep = mask[:, None, :, None].expand_as(ref)
        out, ref = out[keep], ref[keep]
    return float((out - ref).norm() / ref.norm())


def evaluate_settings(settings, q, k, v, mask, seed: int) -> list[dict]:
    ref = exact_attention(q, k, v, mask)
    rows = []
    for name, variant in settings.items():
        # max_len = n: Linformer's projections have one row per position.
        module = build_attention(variant, q.shape[1], q.shape[-1], max_len=q.shape[-2]).to(q.dtype).eval()
        torch.manual_seed(seed)  # the sampled normaliser draws its keys from the global generator
        with torch.no_grad():
            out = module(q, k, v, mask)
        delta = module.diagnostics.get("delta")
        rows.append(
            {
                "setting": name,
                "error": relative_error(out, ref, mask),
                "delta": None if delta is None else float(delta.mean()),
            }
        )
    return rows


def run_synthetic(args, settings) -> list[dict]:
    rows = []
    dtype = getattr(torch, args.dtype)
    for regime in args.regimes:
        for temperature in args.temperatures:
            for n in args.lengths:
                q, k, v = make_regime(
                    regime, args.batch, args.heads, n, args.dim, temperature, args.seed, dtype
                )
                case = {
                    "source": "synthetic",
                    "regime": regime,
                    "temperature": temperature,
                    "n": n,
                    "diag_mass": diagonal_mass(q, k),
                }
                for row in evaluate_settings(settings, q, k, v, None, args.seed):
                    rows.append({**case, **row})
                print(f"  {regime:7s} T={temperature:<5g} n={n:<5d} done", file=sys.stderr)
    return rows


def run_checkpoint(args, settings, captured=None) -> list[dict]:
    if captured is None:
        from lra.bench.capture import capture_checkpoint

        captured = capture_checkpoint(Path(args.checkpoint), args.checkpoint_batch)
    dtype = getattr(torch, args.dtype)
    rows = []
    for layer, calls in captured.items():
        for call, (q, k, v, mask) in enumerate(calls):
            q, k, v = (t.to(dtype) for t in (q, k, v))
            case = {
                "source": "checkpoint",
                "regime": f"checkpoint:{layer}" + (f"/{call}" if len(calls) > 1 else ""),
                "temperature": None,
                "n": q.shape[-2],
                "diag_mass": diagonal_mass(q, k, mask),
            }
            for row in evaluate_settings(settings, q, k, v, mask, args.seed):
                rows.append({**case, **row})
    return rows


def case_key(row: dict) -> tuple:
    return (row["regime"], row["temperature"], row["n"])


def ratios_to_baseline(rows: list[dict], baseline: str = "nystrom") -> list[dict]:
    """Attach ``ratio`` = error / baseline error of the same case to every row."""
    base = {case_key(r): r["error"] for r in rows if r["setting"] == baseline}
    for r in rows:
        b = base.get(case_key(r))
        r["ratio"] = None if not b else r["error"] / b
    return rows


def is_self_attending(row: dict) -> bool:
    return row["regime"] == "self"


def summarise(rows: list[dict], n: int | None) -> dict[str, dict]:
    """Per setting at length ``n`` (None: all lengths): worst ratio outside the self-attending regime, worst and geometric
    mean ratio on it, and whether the issue's goals hold. The defaults are chosen from this."""
    summary: dict[str, dict] = {}
    for setting in dict.fromkeys(r["setting"] for r in rows):
        mine = [r for r in rows if r["setting"] == setting and r["ratio"] is not None]
        mine = [r for r in mine if n is None or r["n"] == n or r["source"] == "checkpoint"]
        other = [r["ratio"] for r in mine if not is_self_attending(r)]
        selfs = [r["ratio"] for r in mine if is_self_attending(r)]
        entry = {
            "worst_ratio_elsewhere": max(other) if other else None,
            "worst_ratio_self": max(selfs) if selfs else None,
            # (exact settings have ratio 0: floored so that the log is defined)
            "geomean_ratio_self": math.exp(sum(math.log(max(x, 1e-300)) for x in selfs) / len(selfs))
            if selfs
            else None,
        }
        entry["meets_elsewhere_goal"] = entry["worst_ratio_elsewhere"] is not None and (
            entry["worst_ratio_elsewhere"] <= ELSEWHERE_RATIO
        )
        entry["meets_self_goal"] = (
            entry["worst_ratio_self"] is not None and entry["worst_ratio_self"] <= SELF_RATIO
        )
        summary[setting] = entry
    return summary


def recommend(summary: dict[str, dict]) -> str | None:
    """Best self-attending gain among the spectral-shift settings that are never more than 2% worse
    than Nyström, on the self-attending regime included (``summary`` over all lengths: a setting that
    fails at one length is not recommended for another)."""
    ok = {
        s: e
        for s, e in summary.items()
        if s.startswith("ss-")
        and e["meets_elsewhere_goal"]
        and e["geomean_ratio_self"] is not None
        and e["worst_ratio_self"] <= ELSEWHERE_RATIO
    }
    return min(ok, key=lambda s: ok[s]["geomean_ratio_self"]) if ok else None


def format_table(rows: list[dict], n: int, settings: list[str]) -> str:
    cases = []
    for r in rows:
        if (r["n"] == n or r["source"] == "checkpoint") and case_key(r) not in cases:
            cases.append(case_key(r))
    by = {(case_key(r), r["setting"]): r for r in rows}
    head = "| regime | T | n | diag mass | " + " | ".join(settings) + " |"
    lines = [head, "|" + " --- |" * (4 + len(settings))]
    for case in cases:
        first = by[(case, settings[0])]
        cells = []
        for s in settings:
            r = by.get((case, s))
            if r is None:
                cells.append("–")
            elif s == "nystrom":
                cells.append(f"{r['error']:.3f}")
            else:
                cells.append(f"{r['error']:.3f} ({r['ratio']:.2f}×)")
        temp = "–" if case[1] is None else f"{case[1]:g}"
        lines.append(
            f"| {case[0]} | {temp} | {case[2]} | {first['diag_mass']:.2f} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


PLOT_SETTINGS = (
    "nystrom",
    "ss-core-trace-free",
    "ss-core-trace-moments",
    "ss-diagonal-trace-free-w16",
    "ss-diagonal-trace-moments",
)


def plot_captured(ax, captured: list[dict], shown: list[str]) -> None:
    """Bars of each shown setting's error per captured checkpoint layer."""
    layers = list(dict.fromkeys(r["regime"] for r in captured))
    width = 0.8 / max(len(shown), 1)
    for i, s in enumerate(shown):
        errs = [
            next((r["error"] for r in captured if r["regime"] == lay and r["setting"] == s), 0)
            for lay in layers
        ]
        ax.bar([j + i * width for j in range(len(layers))], errs, width, label=s)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(layers))])
    ax.set_xticklabels([lay.replace("checkpoint:", "") for lay in layers])
    ax.set(title="checkpoint q/k/v", ylabel="relative error vs softmax")


def plot(rows: list[dict], path: Path, n_table: int) -> None:
    """Top row: error vs length at the middle temperature; bottom row: error vs temperature at the
    table length; one column per synthetic regime, plus one for checkpoint layers when present."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    synthetic = [r for r in rows if r["source"] == "synthetic"]
    captured = [r for r in rows if r["source"] == "checkpoint"]
    regimes = list(dict.fromkeys(r["regime"] for r in synthetic))
    temps = sorted({r["temperature"] for r in synthetic})
    lengths = sorted({r["n"] for r in synthetic})
    shown = [s for s in PLOT_SETTINGS if any(r["setting"] == s for r in rows)]
    cols = max(len(regimes) + (1 if captured else 0), 1)
    fig, axes = plt.subplots(2, cols, figsize=(4.2 * cols, 7), squeeze=False)
    t_mid = temps[len(temps) // 2] if temps else None
    n_row = n_table if n_table in lengths else (lengths[-1] if lengths else None)

    def ticks(ax, values):
        ax.set_xticks(values)
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())

    for col, regime in enumerate(regimes):
        top, bottom = axes[0][col], axes[1][col]
        for s in shown:
            mine = [r for r in synthetic if r["regime"] == regime and r["setting"] == s]
            pts = sorted((r["n"], r["error"]) for r in mine if r["temperature"] == t_mid)
            if pts:
                top.plot(*zip(*pts, strict=True), marker="o", label=s)
            pts = sorted((r["temperature"], r["error"]) for r in mine if r["n"] == n_row)
            if pts:
                bottom.plot(*zip(*pts, strict=True), marker="o", label=s)
        top.set(title=f"{regime}, T={t_mid:g}", xscale="log", yscale="log", xlabel="sequence length n")
        bottom.set(title=f"{regime}, n={n_row}", xscale="log", yscale="log", xlabel="temperature T")
        ticks(top, lengths)
        ticks(bottom, temps)
        for ax in (top, bottom):
            ax.set_ylabel("relative error vs softmax")
            ax.grid(True, which="both", alpha=0.3)
    if captured:
        plot_captured(axes[0][cols - 1], captured, shown)
        axes[1][cols - 1].axis("off")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Approximation error against exact softmax (lower is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv):
    def floats(s):
        return [float(x) for x in s.split(",")]

    def ints(s):
        return [int(x) for x in s.split(",")]

    p = argparse.ArgumentParser(prog="python -m lra.bench fidelity", description=__doc__.split("\n\n")[0])
    p.add_argument("--lengths", type=ints, default=[256, 512, 1024, 2048, 4096])
    p.add_argument("--landmarks", type=int, default=64)
    p.add_argument("--dim", type=int, default=64, help="head dimension of the synthetic q, k, v")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--temperatures", type=floats, default=[0.25, 0.5, 1.0, 2.0])
    p.add_argument(
        "--regimes",
        type=lambda s: [] if s == "none" else s.split(","),
        default=list(REGIMES),
        help="synthetic regimes, comma-separated; none: only the --checkpoint rows",
    )
    p.add_argument("--settings", type=lambda s: s.split(","), default=None, help="subset of setting names")
    p.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", default=None, help="a run's checkpoint: also measure its captured q/k/v")
    p.add_argument("--checkpoint-batch", type=int, default=4)
    p.add_argument("--table-length", type=int, default=1024, help="length n of the printed table")
    p.add_argument("--out", default="outputs/bench/fidelity")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    settings = fidelity_settings(args.landmarks)
    if args.settings:
        unknown = sorted(set(args.settings) - set(settings))
        if unknown:
            raise SystemExit(f"unknown settings {unknown}; known: {sorted(settings)}")
        settings = {k: v for k, v in settings.items() if k in args.settings or k == "nystrom"}
    out = Path(args.out)
    started = time.time()
    captured = None
    if args.checkpoint:
        # Read (and check) the checkpoint before the synthetic regimes: a bad file is reported at once.
        from lra.bench.capture import capture_checkpoint

        try:
            captured = capture_checkpoint(Path(args.checkpoint), args.checkpoint_batch)
        except (LRAError, FileNotFoundError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    out.mkdir(parents=True, exist_ok=True)
    rows = run_synthetic(args, settings)
    if captured is not None:
        rows += run_checkpoint(args, settings, captured)
    ratios_to_baseline(rows)
    summary = summarise(rows, args.table_length)
    all_lengths = summarise(rows, None)
    record = {
        "benchmark": "fidelity",
        "args": vars(args),
        "settings": settings,
        "rows": rows,
        "summary_at_table_length": summary,
        "summary_all_lengths": all_lengths,
        "recommended": recommend(all_lengths),
        "goals": {"elsewhere_ratio_max": ELSEWHERE_RATIO, "self_ratio_max": SELF_RATIO},
        "torch": torch.__version__,
        "machine": platform.machine(),
        "wall_s": time.time() - started,
    }
    (out / "fidelity.json").write_text(json.dumps(record, indent=1))
    plot(rows, out / "fidelity.png", args.table_length)
    main_settings = [s for s in PLOT_SETTINGS if s in settings]
    main_settings += [s for s in attention_names() if s in settings and s not in main_settings]
    print(format_table(rows, args.table_length, main_settings))
    print(
        f"\nrecommended (best self-attending gain, never worse than {ELSEWHERE_RATIO}x Nyström at any length): "
        f"{record['recommended']}"
    )
    print(f"wrote {out / 'fidelity.json'} and {out / 'fidelity.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
