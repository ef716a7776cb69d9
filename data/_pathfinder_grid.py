"""A figure of generated Pathfinder images with their labels, next to what the model actually sees.

    python -m data._pathfinder_grid docs/img/pathfinder_grid.png

Rows: the three difficulties at 32x32 and Path-X at 128x128, titled with the label. Bottom: one
32x32 image as the model receives it, a flat sequence of 1024 grey levels in raster order (positions
32 apart were vertical neighbours; the markers end up hundreds of tokens apart).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from data.pathfinder_generator import DIFFICULTIES, render, spec_for

LABELS = {0: "0: not connected", 1: "1: connected"}


def figure(out: Path, per_row: int = 6, seed: int = 0) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(32, d) for d in DIFFICULTIES] + [(128, "curv_contour_length_14")]
    fig = plt.figure(figsize=(per_row * 1.45, len(rows) * 1.6 + 1.9), dpi=80)
    grid = fig.add_gridspec(len(rows) + 1, per_row, height_ratios=[1] * len(rows) + [0.9], hspace=0.45)
    example = None
    for r, (res, difficulty) in enumerate(rows):
        spec = spec_for(res, difficulty, seed=seed)
        for c in range(per_row):
            img, label, _ = render(spec, r * per_row + c)
            if example is None and res == 32 and difficulty == "curv_contour_length_14":
                example = (img, label)
            ax = fig.add_subplot(grid[r, c])
            ax.imshow(img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(LABELS[label], fontsize=7, color="tab:green" if label else "tab:red")
            if c == 0:
                name = f"Path-X {res}px" if res == 128 else f"{res}px"
                ax.set_ylabel(f"{name}\n{difficulty.replace('curv_', '')}", fontsize=7)
    img, label = example
    seq = img.reshape(-1)
    ax = fig.add_subplot(grid[len(rows), :])
    ax.imshow(
        seq[None, :],
        cmap="gray",
        vmin=0,
        vmax=255,
        aspect="auto",
        interpolation="nearest",
        extent=(0, len(seq), 0, 255),
    )
    ax.plot(np.arange(len(seq)) + 0.5, seq, lw=0.4, color="tab:orange")
    ax.set_xlim(0, len(seq))
    ax.set_xticks(range(0, len(seq) + 1, 128))
    ax.tick_params(labelsize=6)
    ax.set_yticks([0, 255])
    ax.set_xlabel(
        f"what the model sees: the first 32px contour_length_14 image ({LABELS[label]}) as 1024 tokens in raster order "
        "(grey level per position)",
        fontsize=7,
    )
    fig.suptitle("Generated Pathfinder (data.source=generate): images and labels", fontsize=9)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    figure(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/img/pathfinder_grid.png"))
