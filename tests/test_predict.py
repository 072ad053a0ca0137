import numpy as np
import pytest
import torch

from neuropil.errors import NeuropilError
from neuropil.model import UNet3D
from neuropil.predict import pass_bytes, plan_tiles, predict_affinities


@pytest.fixture(scope="module", params=["none", "batch"])
def model(request):
    torch.manual_seed(0)
    network = UNet3D(base_channels=2, depth=3, voxel_size=(20.0, 10.0, 10.0), normalization=request.param)
    if request.param == "batch":
        # a few training-mode passes give the running statistics values far from the identity
        with torch.no_grad():
            for _ in range(3):
                network(torch.rand(2, 1, 8, 16, 16) * 5 + 2)
        assert not torch.allclose(network.down[0][1].running_mean, torch.zeros(2))
    return network.eval()


def test_tiles_equal_one_shot_prediction(model):
    raw = np.random.default_rng(0).integers(0, 255, size=(12, 40, 36), dtype=np.uint8)
    whole = predict_affinities(raw, model, tile_shape=None, progress=False)
    # 3 x 3 x 3 tiles; along y and x some windows end inside the padded volume, others at its edge
    tiled = predict_affinities(raw, model, tile_shape=(4, 16, 12), progress=False)
    assert whole.shape == (3, 12, 40, 36)
    # batch normalization rescales activations, so float32 round-off grows a little
    np.testing.assert_allclose(tiled, whole, atol=1e-5 if model.config.normalization == "none" else 1e-4)


def test_a_too_small_halo_shows_seams(model):
    raw = np.random.default_rng(0).integers(0, 255, size=(12, 40, 36), dtype=np.uint8)
    whole = predict_affinities(raw, model, tile_shape=None, progress=False)
    tiled = predict_affinities(raw, model, tile_shape=(4, 16, 8), halo=(0, 0, 0), progress=False)
    assert np.abs(tiled - whole).max() > 1e-3


def test_prediction_is_probability_per_offset(model):
    raw = np.random.default_rng(1).random((8, 16, 16)).astype(np.float32)
    affinities = predict_affinities(raw, model, progress=False)
    assert affinities.dtype == np.float32
    assert 0.0 <= affinities.min() and affinities.max() <= 1.0


def test_bad_volumes_raise(model):
    with pytest.raises(NeuropilError, match="NaN"):
        predict_affinities(np.full((4, 8, 8), np.nan, np.float32), model, progress=False)
    with pytest.raises(NeuropilError, match="3-D"):
        predict_affinities(np.zeros((8, 8), np.float32), model, progress=False)


def test_the_default_is_one_pass_when_the_volume_fits(model):
    plan = plan_tiles((12, 40, 36), model, memory=2**30)
    assert plan.tiles == 1 and plan.efficiency == 1.0
    assert plan.covered == (12, 40, 36) and plan.windows == plan.covered


def test_a_small_budget_gives_tiles_that_fit_it_and_agree_with_one_pass(model):
    raw = np.random.default_rng(2).integers(0, 255, size=(20, 120, 112), dtype=np.uint8)
    budget = pass_bytes(model, raw.shape) // 3
    plan = plan_tiles(raw.shape, model, memory=budget)
    assert plan.tiles > 1
    assert pass_bytes(model, plan.windows) <= budget
    assert plan.computed > np.prod(raw.shape)  # context is read twice where tiles meet
    whole = predict_affinities(raw, model, memory=2**30, progress=False)
    tiled = predict_affinities(raw, model, memory=budget, progress=False)
    np.testing.assert_allclose(tiled, whole, atol=1e-5 if model.config.normalization == "none" else 1e-4)


def test_tiles_that_do_not_divide_the_volume_keep_a_shorter_last_tile(model):
    raw = np.random.default_rng(3).integers(0, 255, size=(9, 34, 34), dtype=np.uint8)
    plan = plan_tiles(raw.shape, model, tile_shape=(8, 24, 24))
    assert plan.covered == (10, 36, 36)  # up to the pooling (2, 4, 4), not to whole tiles
    whole = predict_affinities(raw, model, tile_shape=None, memory=2**30, progress=False)
    tiled = predict_affinities(raw, model, tile_shape=(8, 24, 24), progress=False)
    np.testing.assert_allclose(tiled, whole, atol=1e-5 if model.config.normalization == "none" else 1e-4)


def test_a_budget_below_the_smallest_window_is_an_error(model):
    with pytest.raises(NeuropilError, match="memory budget"):
        plan_tiles((12, 40, 36), model, memory=1000)


def test_the_memory_estimate_grows_with_channels_and_voxels():
    small = UNet3D(base_channels=8, depth=4, voxel_size=(25.0, 13.0, 13.0))
    large = UNet3D(base_channels=16, depth=4, voxel_size=(25.0, 13.0, 13.0))
    assert pass_bytes(large, (8, 16, 16)) > 1.5 * pass_bytes(small, (8, 16, 16))
    assert pass_bytes(small, (16, 16, 16)) == pytest.approx(2 * pass_bytes(small, (8, 16, 16)), abs=2)
