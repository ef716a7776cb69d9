"""Pathfinder images (after Linsley et al. 2018, as in LRA), written in the LRA release's own layout.

An image holds two target snakes of ``contour_length`` paddles, a few short distractor snakes, and two
round markers. Label 1: the markers sit on both ends of one snake; label 0: on one end of each target
snake. Both labels therefore show the same number of full-length snakes; only connectivity differs.

A snake grows paddle by paddle. Each next paddle turns by dtheta, drawn with weight
``cos^2(min(|dtheta| * continuity, pi/2))`` among candidate turns whose stroke (the gap before it and
the paddle itself) stays inside the image and keeps ``margin`` away from every other stroke and marker.
Drawing happens on an ``antialias``-times finer canvas that is box-averaged down to the output size.

Output: ``imgs/<batch>/sample_<i>.png`` (8-bit grayscale) and ``metadata/<batch>.npy`` (plain text,
one row per image: ``imgs/<batch> sample_<i>.png <i> <label> <contour_length> <distractors>``), plus
``generation.json`` with the settings. The reader in ``data/pathfinder.py`` serves this and the release.

Determinism: image k is drawn from ``default_rng([seed, k])`` alone, so the set depends on the seed and
settings only, not on the number of worker processes or the order in which they finish.
"""

from __future__ import annotations

import math
import multiprocessing as mp
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import numpy as np
from tqdm.auto import tqdm

from data.cache import AtomicDirectory, check_replaceable, generator_command, write_spec
from data.cache import read_spec as read_spec_file

DIFFICULTIES = {"curv_baseline": 6, "curv_contour_length_9": 9, "curv_contour_length_14": 14}

# Geometry in output pixels. 32x32: the LRA settings; 128x128 (Path-X): thickness, margin, continuity,
# marker radius and distractor budget from LRA, paddle length and gap scaled so that a snake spans
# about as much of the image as at 32x32.
# Each setting: (its value at 32x32, at 128x128).
_GEOMETRY_BY_RESOLUTION = {
    "paddle_length": (2.0, 6.0),
    "paddle_gap": (1.0, 3.0),
    "paddle_thickness": (0.5, 1.5),
    "margin": (1.0, 2.5),
    "continuity": (1.0, 1.8),
    "marker_radius": (1.5, 3.0),
    "distractor_paddles": (20, 35),
}
GEOMETRY = {
    resolution: {key: values[i] for key, values in _GEOMETRY_BY_RESOLUTION.items()}
    for i, resolution in enumerate((32, 128))
}
NUM_TURNS = 15  # candidate turns per paddle
SLACK = math.sqrt(0.5)  # half the diagonal of a fine-canvas pixel
SNAKE_TRIES = 40  # restarts of one target snake before the whole image starts again


@dataclass(frozen=True)
class PathfinderSpec:
    resolution: int = 32
    contour_length: int = 14
    num_images: int = 200_000
    images_per_batch: int = 1000
    seed: int = 0
    paddle_length: float = 2.0
    paddle_gap: float = 1.0
    paddle_thickness: float = 0.5
    margin: float = 1.0
    continuity: float = 1.0
    marker_radius: float = 1.5
    distractor_paddles: int = 20
    contrast: float = 0.75
    antialias: int = 2

    # What a generation writes into its folder besides generation.json (see data.cache.check_replaceable).
    OUTPUTS: ClassVar[str] = r"metadata(/\d+\.npy)?|imgs(/\d+(/sample_\d+\.png)?)?"

    @property
    def distractor_length(self) -> int:
        return max(1, round(self.contour_length / 3))

    @property
    def num_distractors(self) -> int:
        return round(self.distractor_paddles / self.distractor_length)


def spec_for(resolution: int = 32, difficulty: str = "curv_contour_length_14", **overrides) -> PathfinderSpec:
    """The settings for one resolution (32 or 128) and difficulty folder name."""
    if resolution not in GEOMETRY:
        raise ValueError(f"resolution {resolution} has no preset; use one of {sorted(GEOMETRY)}")
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty {difficulty!r} is not one of {sorted(DIFFICULTIES)}")
    base = PathfinderSpec(
        resolution=resolution, contour_length=DIFFICULTIES[difficulty], **GEOMETRY[resolution]
    )
    return replace(base, **overrides)


class Canvas:
    """The fine canvas: stroke coverage, and where a new centreline may not go (``blocked``)."""

    def __init__(self, spec: PathfinderSpec):
        a = spec.antialias
        self.size = spec.resolution * a
        self.length, self.gap = spec.paddle_length * a, spec.paddle_gap * a
        self.half = spec.paddle_thickness * a / 2
        self.margin = spec.margin * a
        self.radius = spec.marker_radius * a
        self.cover = np.zeros((self.size, self.size), np.float32)
        self.blocked = np.zeros((self.size, self.size), bool)

    def _box(self, lo: np.ndarray, hi: np.ndarray, pad: float):
        x0, y0 = (max(0, int(math.floor(v - pad))) for v in lo)
        x1, y1 = (min(self.size, int(math.ceil(v + pad)) + 1) for v in hi)
        ys, xs = np.mgrid[y0:y1, x0:x1]
        return (slice(y0, y1), slice(x0, x1)), xs + 0.5, ys + 0.5

    def _segment_distance(self, a: np.ndarray, b: np.ndarray, pad: float):
        box, xs, ys = self._box(np.minimum(a, b), np.maximum(a, b), pad)
        d = b - a
        t = np.clip(((xs - a[0]) * d[0] + (ys - a[1]) * d[1]) / max(float(d @ d), 1e-9), 0.0, 1.0)
        return box, np.hypot(xs - (a[0] + t * d[0]), ys - (a[1] + t * d[1]))

    def block_segment(self, blocked: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
        # A new centreline must stay a margin plus both half thicknesses away. Candidates are checked
        # at the pixel under each sample point, so the zone grows by half a pixel diagonal (SLACK).
        reach = 2 * self.half + self.margin + SLACK
        box, dist = self._segment_distance(a, b, reach)
        blocked[box] |= dist <= reach

    def block_disc(self, blocked: np.ndarray, c: np.ndarray) -> None:
        reach = self.radius + self.half + self.margin + SLACK
        box, xs, ys = self._box(c, c, reach)
        blocked[box] |= np.hypot(xs - c[0], ys - c[1]) <= reach

    def draw_segment(self, a: np.ndarray, b: np.ndarray) -> None:
        box, dist = self._segment_distance(a, b, self.half + 1)
        self.cover[box] = np.maximum(self.cover[box], np.clip(self.half + 0.5 - dist, 0, 1))

    def draw_disc(self, c: np.ndarray) -> None:
        box, xs, ys = self._box(c, c, self.radius + 1)
        disc = np.clip(self.radius + 0.5 - np.hypot(xs - c[0], ys - c[1]), 0, 1)
        self.cover[box] = np.maximum(self.cover[box], disc)

    def free(self, blocked: np.ndarray, points: np.ndarray) -> np.ndarray:
        """(..., k, 2) centreline samples -> (...) True where all are inside and unblocked."""
        lo, hi = self.margin, self.size - self.margin
        inside = ((points >= lo) & (points < hi)).all(axis=(-1, -2))
        idx = np.clip(points.astype(np.int64), 0, self.size - 1)
        return inside & ~blocked[idx[..., 1], idx[..., 0]].any(axis=-1)


def grow_snake(
    canvas: Canvas, rng: np.random.Generator, n: int, continuity: float, tries: int
) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """Place a snake of ``n`` paddles; commit it to ``canvas.blocked`` and return its paddles, or None."""
    samples = np.linspace(0.0, 1.0, max(4, int(math.ceil(2 * (canvas.gap + canvas.length)))))
    step = math.pi / 2 / continuity  # turns beyond this have weight 0
    for _ in range(tries):
        blocked = canvas.blocked.copy()  # roll back a failed attempt
        pos = rng.uniform(canvas.margin, canvas.size - canvas.margin, 2)
        paddles: list[tuple[np.ndarray, np.ndarray]] = []
        theta = rng.uniform(0, 2 * math.pi)
        for k in range(n):
            if k == 0:
                thetas = (
                    theta
                    + rng.uniform(0, 2 * math.pi)
                    + np.linspace(0, 2 * math.pi, NUM_TURNS, endpoint=False)
                )
                weights = np.ones(NUM_TURNS)
                gap = 0.0
            else:
                turns = np.linspace(-step, step, NUM_TURNS + 2)[1:-1]
                turns = turns + rng.uniform(-0.5, 0.5, NUM_TURNS) * (turns[1] - turns[0])
                thetas = theta + turns
                weights = np.cos(np.minimum(np.abs(turns) * continuity, math.pi / 2)) ** 2
                gap = canvas.gap
            u = np.stack([np.cos(thetas), np.sin(thetas)], axis=-1)  # (turns, 2)
            # Samples cover the gap too, so that a snake never threads through another one's gap.
            pts = pos + u[:, None, :] * (samples[None, :, None] * (gap + canvas.length))
            ok = canvas.free(blocked, pts)
            if not ok.any():
                break
            p = np.where(ok, weights, 0.0)
            choice = rng.choice(len(thetas), p=p / p.sum()) if p.sum() > 0 else int(np.flatnonzero(ok)[0])
            theta = thetas[choice]
            start = pos + u[choice] * gap
            end = start + u[choice] * canvas.length
            if paddles:  # commit the previous paddle only now: the new one starts right next to it
                canvas.block_segment(blocked, *paddles[-1])
            paddles.append((start, end))
            pos = end
        if len(paddles) == n:
            canvas.block_segment(blocked, *paddles[-1])
            canvas.blocked = blocked
            return paddles
    return None


@dataclass
class Layout:
    """One image before rasterising: snakes as lists of paddles (fine-canvas coordinates), markers."""

    label: int
    snakes: list  # [target A, target B, *distractors]; each a list of (start, end) points
    markers: tuple
    canvas: Canvas


def layout(spec: PathfinderSpec, index: int) -> Layout:
    """Place the snakes and markers of image ``index``; drawn from ``default_rng([seed, index])``."""
    rng = np.random.default_rng([spec.seed, index])
    label = int(rng.integers(0, 2))
    while True:  # both target snakes must reach full length; otherwise start the image again
        canvas = Canvas(spec)
        targets = []
        for _ in range(2):
            snake = grow_snake(canvas, rng, spec.contour_length, spec.continuity, SNAKE_TRIES)
            if snake is None:
                break
            for c in (snake[0][0], snake[-1][1]):  # reserve both ends' markers, whichever the label uses
                canvas.block_disc(canvas.blocked, c)
            targets.append(snake)
        if len(targets) == 2:
            break
    distractors = []
    for _ in range(spec.num_distractors):  # a distractor that finds no room is left out
        snake = grow_snake(canvas, rng, spec.distractor_length, spec.continuity, 10)
        if snake is not None:
            distractors.append(snake)
    ends = [(t[0][0], t[-1][1]) for t in targets]
    if label == 1:
        markers = ends[0]
    else:
        markers = (ends[0][int(rng.integers(0, 2))], ends[1][int(rng.integers(0, 2))])
    return Layout(label, targets + distractors, markers, canvas)


def render(spec: PathfinderSpec, index: int) -> tuple[np.ndarray, int, int]:
    """Image ``index`` of the set: (uint8 (res, res) image, label, distractors drawn)."""
    lay = layout(spec, index)
    canvas = lay.canvas
    for snake in lay.snakes:
        for a, b in snake:
            canvas.draw_segment(a, b)
    for c in lay.markers:
        canvas.draw_disc(c)
    a, r = spec.antialias, spec.resolution
    small = canvas.cover.reshape(r, a, r, a).mean(axis=(1, 3))
    image = np.round(np.clip(small, 0, 1) * spec.contrast * 255).astype(np.uint8)
    return image, lay.label, len(lay.snakes) - 2


def _render_chunk(args: tuple[PathfinderSpec, str, int, int]) -> list[str]:
    """Render images [start, stop) into ``out``; return their metadata rows."""
    from PIL import Image

    spec, out, start, stop = args
    rows = []
    for k in range(start, stop):
        batch, i = divmod(k, spec.images_per_batch)
        img, label, distractors = render(spec, k)
        folder = Path(out) / "imgs" / str(batch)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img, mode="L").save(folder / f"sample_{i}.png")
        rows.append(f"imgs/{batch} sample_{i}.png {i} {label} {spec.contour_length} {distractors}")
    return rows


def generate_pathfinder(
    out_dir: Path, spec: PathfinderSpec, workers: int | None = None, progress: bool = True, chunk: int = 100
) -> Path:
    """Write ``spec.num_images`` images and their metadata to ``out_dir`` in the release layout. A folder
    already there is replaced only when an earlier generation wrote it (and nothing else is in it)."""
    check_replaceable(out_dir, PathfinderSpec.OUTPUTS)  # before the images are drawn, not after
    workers = workers if workers is not None else mp.cpu_count()
    jobs = [(spec, "", a, min(a + chunk, spec.num_images)) for a in range(0, spec.num_images, chunk)]
    rows: dict[int, list[str]] = {}
    desc = f"generating Pathfinder-{spec.resolution} (contour {spec.contour_length})"
    with (
        AtomicDirectory(Path(out_dir), ours=PathfinderSpec.OUTPUTS) as tmp,
        tqdm(total=spec.num_images, desc=desc, unit="img", disable=not progress) as bar,
    ):
        jobs = [(s, str(tmp), a, b) for s, _, a, b in jobs]
        if workers <= 1:
            results = map(_render_chunk, jobs)
            for (_, _, a, _), chunk_rows in zip(jobs, results, strict=True):
                _collect(rows, a, chunk_rows, spec, bar)
        else:
            with mp.get_context("fork").Pool(workers) as pool:
                for (_, _, a, _), chunk_rows in zip(jobs, pool.imap(_render_chunk, jobs), strict=True):
                    _collect(rows, a, chunk_rows, spec, bar)
        (tmp / "metadata").mkdir()
        for batch, lines in sorted(rows.items()):
            (tmp / "metadata" / f"{batch}.npy").write_text("\n".join(lines) + "\n")
        write_spec(tmp, spec)
    return Path(out_dir)


def _collect(rows: dict[int, list[str]], start: int, chunk_rows: list[str], spec, bar) -> None:
    for k, row in enumerate(chunk_rows, start=start):
        rows.setdefault(k // spec.images_per_batch, []).append(row)
    bar.update(len(chunk_rows))


def read_spec(out_dir: Path) -> PathfinderSpec | None:
    return read_spec_file(out_dir, PathfinderSpec)


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(description="Generate Pathfinder in the LRA release's layout.")
    p.add_argument("out_dir", type=Path)
    p.add_argument("--resolution", type=int, default=32, choices=sorted(GEOMETRY))
    p.add_argument("--difficulty", default="curv_contour_length_14", choices=sorted(DIFFICULTIES))
    p.add_argument("--num-images", type=int, default=200_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None)
    args = p.parse_args(argv)
    spec = spec_for(args.resolution, args.difficulty, num_images=args.num_images, seed=args.seed)
    generator_command(lambda: generate_pathfinder(args.out_dir, spec, workers=args.workers), args.out_dir)


if __name__ == "__main__":
    main()
