import pytest
import torch
from pydantic import ValidationError

from neuropil.config import parse_config
from neuropil.conventions import NEAREST_NEIGHBOURS, check_offsets
from neuropil.errors import NeuropilError
from neuropil.model import ModelConfig, UNet3D

LONG_RANGE = (*NEAREST_NEIGHBOURS, (0, -3, 0), (0, 0, -3), (0, -9, 0), (0, 0, -9), (0, -27, 0), (-2, 0, 0), (-3, 0, 0))


def test_long_range_offsets_give_one_output_channel_each():
    config = ModelConfig(offsets=LONG_RANGE, base_channels=2, depth=2, normalization="none")
    assert config.out_channels == 10
    output = UNet3D(config)(torch.zeros((1, 1, 4, 8, 8)))
    assert output.shape == (1, 10, 4, 8, 8)


def test_default_offsets_are_the_nearest_neighbours():
    assert ModelConfig().offsets == NEAREST_NEIGHBOURS
    assert check_offsets([[-1, 0, 0], [0, -1, 0], [0, 0, -1], [0, -9, -9]])[-1] == (0, -9, -9)


@pytest.mark.parametrize(
    ("offsets", "message"),
    [
        ((*NEAREST_NEIGHBOURS, (0, 0, 0)), "relates a voxel to itself"),
        ((*NEAREST_NEIGHBOURS, (0, 9, 0)), "must point backwards"),
        ((*NEAREST_NEIGHBOURS, (-2, 0, 3)), "must point backwards"),
        ((*NEAREST_NEIGHBOURS, (0, -9, 0), (0, -9, 0)), "given twice"),
        (((0, -1, 0), (-1, 0, 0), (0, 0, -1), (0, -9, 0)), "first three offsets must be the nearest neighbours"),
        (((0, -9, 0),), "first three offsets must be the nearest neighbours"),
    ],
)
def test_bad_offsets_are_refused(offsets, message):
    with pytest.raises(ValidationError, match=message):
        ModelConfig(offsets=offsets)


def test_bad_offsets_in_a_run_config_are_a_one_line_error_naming_the_key():
    config = {"model": {"offsets": [[-1, 0, 0], [0, -1, 0], [0, 0, -1], [0, 0, 9]]}}
    with pytest.raises(NeuropilError, match=r"^config: bad value for 'model\.offsets': offset \(0, 0, 9\)") as error:
        parse_config(config)
    assert "\n" not in str(error.value)


def test_the_shipped_long_range_config_validates():
    from pathlib import Path

    from neuropil.config import load_config

    config = load_config(Path(__file__).parents[1] / "configs" / "long-range.yaml")
    assert config.model.offsets[:3] == NEAREST_NEIGHBOURS
    assert {(0, -3, 0), (0, 0, -3), (0, -9, 0), (0, 0, -9), (-2, 0, 0)} == set(config.model.offsets[3:])
    assert config.model.out_channels == 8
