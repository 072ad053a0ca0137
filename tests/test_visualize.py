import numpy as np

from neuropil.conventions import NEAREST_NEIGHBOURS
from neuropil.visualize import figure_slice, in_plane_affinity, overlay_rgb


def test_overlay_colours_ones_pale_zeros_black_and_truth_red():
    affinity = np.array([[0.0, 1.0, 1.0]])
    target = np.array([[0, 0, 1]])
    rgb = overlay_rgb(affinity, target)
    np.testing.assert_allclose(rgb[0, 0], 0.0)
    assert rgb[0, 1].min() > 0.9 and rgb[0, 1, 2] >= rgb[0, 1, 0]  # pale blue-white
    assert rgb[0, 2, 0] > rgb[0, 2, 1] + 0.3  # red tint where the truth is 1


def test_in_plane_affinity_averages_y_and_x_channels():
    affinities = np.stack([np.zeros((1, 2, 2)), np.ones((1, 2, 2)), np.zeros((1, 2, 2))])
    np.testing.assert_allclose(in_plane_affinity(affinities, NEAREST_NEIGHBOURS), 0.5)


def test_figure_is_written(tmp_path):
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 255, (4, 16, 16), dtype=np.uint8)
    affinities = rng.random((3, 4, 16, 16)).astype(np.float32)
    path = figure_slice(
        tmp_path / "f.png",
        raw=raw,
        affinities=affinities,
        target_affinities=(affinities > 0.5).astype(np.float32),
        target_mask=np.ones_like(affinities),
        offsets=NEAREST_NEIGHBOURS,
        segmentation=rng.integers(0, 5, (4, 16, 16)),
    )
    assert path.stat().st_size > 1000
    assert not list(tmp_path.glob("*.partial*"))
