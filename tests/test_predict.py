import numpy as np
import pytest
import torch

from neuropil.errors import NeuropilError
from neuropil.model import UNet3D
from neuropil.predict import predict_affinities


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
