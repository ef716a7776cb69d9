"""The Pathfinder generator: release layout, determinism across worker counts, geometry per preset."""

from __future__ import annotations

import json

import numpy as np
import pytest

from data.pathfinder_generator import DIFFICULTIES, generate_pathfinder, layout, read_spec, render, spec_for


def test_same_seed_same_images_whatever_the_workers(tmp_path):
    spec = spec_for(32, "curv_baseline", num_images=24, images_per_batch=10, seed=3)
    a = generate_pathfinder(tmp_path / "a", spec, workers=1, progress=False, chunk=5)
    b = generate_pathfinder(tmp_path / "b", spec, workers=2, progress=False, chunk=7)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 24 + 3 + 1  # images, metadata/0..2.npy, generation.json
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    assert read_spec(a) == spec
    other = render(spec_for(32, "curv_baseline", seed=4), 0)[0]
    assert not np.array_equal(render(spec, 0)[0], other)


def test_metadata_rows_follow_the_release_format(tmp_path):
    spec = spec_for(32, "curv_contour_length_9", num_images=12, images_per_batch=5)
    out = generate_pathfinder(tmp_path / "g", spec, workers=1, progress=False)
    rows = (out / "metadata" / "1.npy").read_text().splitlines()
    assert len(rows) == 5
    fields = rows[0].split()
    assert fields[0] == "imgs/1" and fields[1] == "sample_0.png" and fields[3] in ("0", "1")
    assert (out / fields[0] / fields[1]).is_file()
    assert json.loads((out / "generation.json").read_text())["contour_length"] == 9


@pytest.mark.parametrize("resolution", [32, 128])
@pytest.mark.parametrize("difficulty", sorted(DIFFICULTIES))
def test_every_preset_renders(resolution, difficulty):
    spec = spec_for(resolution, difficulty)
    labels = []
    for k in range(4 if resolution == 32 else 2):
        img, label, distractors = render(spec, k)
        assert img.shape == (resolution, resolution) and img.dtype == np.uint8
        assert img.max() == round(spec.contrast * 255) and (img == 0).mean() > 0.5  # strokes on black
        assert 0 <= distractors <= spec.num_distractors
        labels.append(label)
    assert set(labels) <= {0, 1}


def test_labels_are_balanced():
    spec = spec_for(32, "curv_baseline")
    labels = [render(spec, k)[1] for k in range(60)]
    assert 15 <= sum(labels) <= 45


def test_unknown_presets_are_refused():
    with pytest.raises(ValueError, match="resolution 64"):
        spec_for(64)
    with pytest.raises(ValueError, match="difficulty"):
        spec_for(32, "curv_contour_length_20")


def _segment_gap(s1, s2) -> float:
    """Smallest distance between two polylines of paddles (sampled finely)."""
    pts = lambda snake: np.concatenate([a + np.linspace(0, 1, 12)[:, None] * (b - a) for a, b in snake])  # noqa: E731
    p, q = pts(s1), pts(s2)
    return float(np.sqrt(((p[:, None, :] - q[None, :, :]) ** 2).sum(-1)).min())


@pytest.mark.parametrize("resolution", [32, 128])
def test_snakes_keep_apart_and_markers_sit_on_target_ends(resolution):
    spec = spec_for(resolution, "curv_contour_length_14")
    for k in range(8):
        lay = layout(spec, k)
        a, b = lay.snakes[0], lay.snakes[1]
        assert len(a) == len(b) == spec.contour_length
        assert all(len(d) == spec.distractor_length for d in lay.snakes[2:])
        required = 2 * lay.canvas.half + lay.canvas.margin
        for i in range(len(lay.snakes)):
            for j in range(i + 1, len(lay.snakes)):
                assert _segment_gap(lay.snakes[i], lay.snakes[j]) >= required - 0.1, (k, i, j)
        ends_a, ends_b = (a[0][0], a[-1][1]), (b[0][0], b[-1][1])
        on = lambda m, ends: any(np.allclose(m, e) for e in ends)  # noqa: E731
        if lay.label == 1:
            assert on(lay.markers[0], ends_a) and on(lay.markers[1], ends_a)
        else:
            assert on(lay.markers[0], ends_a) and on(lay.markers[1], ends_b)
