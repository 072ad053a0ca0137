import sys

import matplotlib
import numpy as np
import pytest

from neuropil.conventions import NEAREST_NEIGHBOURS
from neuropil.errors import NeuropilError
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


def _figure(path, **options):
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 255, (4, 16, 16), dtype=np.uint8)
    affinities = rng.random((3, 4, 16, 16)).astype(np.float32)
    return figure_slice(
        path,
        raw=raw,
        affinities=affinities,
        target_affinities=(affinities > 0.5).astype(np.float32),
        target_mask=np.ones_like(affinities),
        offsets=NEAREST_NEIGHBOURS,
        segmentation=rng.integers(0, 5, (4, 16, 16)),
        **options,
    )


def test_figure_is_written(tmp_path):
    path = _figure(tmp_path / "f.png")
    assert path.stat().st_size > 1000
    assert path.read_bytes().startswith(b"\x89PNG")
    assert not list(tmp_path.glob("*.partial*"))


def test_figure_leaves_the_matplotlib_backend_and_pyplot_alone(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("library code chose the matplotlib backend")

    monkeypatch.setattr(matplotlib, "use", refuse)
    pyplot = sys.modules.get("matplotlib.pyplot")
    open_before = [] if pyplot is None else pyplot.get_fignums()
    _figure(tmp_path / "f.png")
    pyplot = sys.modules.get("matplotlib.pyplot")
    assert pyplot is None or pyplot.get_fignums() == open_before


def test_figure_of_a_section_outside_the_volume_is_an_error(tmp_path):
    with pytest.raises(NeuropilError, match="z=4 is outside"):
        _figure(tmp_path / "f.png", z=4)
