"""The one segmentation pipeline: the CLI, the Python API and blockwise give the same fragments."""

import numpy as np
import pytest
import scipy.ndimage

from neuropil.blockwise import segment_blockwise
from neuropil.cli import main
from neuropil.errors import NeuropilError
from neuropil.io import open_volume, read_volume, write_volume
from neuropil.segment import fragments, segment
from neuropil.segment.affinities import affinities_from_boundaries

ANISOTROPIC = (40.0, 8.0, 8.0)


@pytest.fixture(scope="module")
def boundaries():
    """A smooth random boundary map whose watershed seeds depend on the voxel size."""
    rng = np.random.default_rng(0)
    noise = scipy.ndimage.gaussian_filter(rng.random((12, 40, 40)), sigma=(1.0, 3.0, 3.0))
    return ((noise - noise.min()) / np.ptp(noise)).astype(np.float32)


@pytest.fixture(scope="module")
def affinities(boundaries):
    return affinities_from_boundaries(boundaries, combine="mean")


def test_fragments_depend_on_the_voxel_size(affinities):
    anisotropic, n_anisotropic = fragments(affinities, voxel_size=ANISOTROPIC)
    isotropic, n_isotropic = fragments(affinities, voxel_size=(8.0, 8.0, 8.0))
    assert n_anisotropic == anisotropic.max() and n_isotropic == isotropic.max()
    assert not np.array_equal(anisotropic, isotropic)


def test_segment_returns_the_fragments_and_one_segmentation_per_threshold(affinities):
    result = segment(affinities, voxel_size=ANISOTROPIC, thresholds=(0.0, 0.5, 0.6))
    expected, _ = fragments(affinities, voxel_size=ANISOTROPIC)
    np.testing.assert_array_equal(result.fragments, expected)
    assert result.thresholds == (0.0, 0.5, 0.6) and len(result.segmentations) == 3
    # at threshold 0 nothing merges: each fragment is its own segment, with its own id
    np.testing.assert_array_equal(result.segmentations[0], expected)
    counts = [len(np.unique(s)) for s in result.segmentations]
    assert counts[0] > counts[1] > counts[2]


@pytest.mark.parametrize("kind", ["affinities", "boundaries"])
def test_cli_api_and_blockwise_give_the_same_fragments_and_keep_the_voxel_size(tmp_path, kind, request):
    values = request.getfixturevalue(kind)
    source = f"{tmp_path / 'in.zarr'}/{kind}"
    write_volume(source, values, voxel_size=ANISOTROPIC)
    expected, _ = fragments(values, voxel_size=ANISOTROPIC)

    # threshold 0 merges nothing, so each output is the watershed's fragments
    cli_out = f"{tmp_path / 'cli.zarr'}/seg"
    assert main(["segment", source, cli_out, "--threshold", "0"]) == 0
    block_out = f"{tmp_path / 'block.zarr'}/seg"
    segment_blockwise(
        source, [block_out], thresholds=[0.0], block_shape=values.shape[-3:], scheduler="synchronous", progress=False
    )
    for address in (cli_out, block_out):
        np.testing.assert_array_equal(read_volume(address), expected)
        with open_volume(address) as written:
            assert written.voxel_size == ANISOTROPIC


def test_cli_needs_a_voxel_size_when_the_file_stores_none(tmp_path, affinities, capsys):
    source = f"{tmp_path / 'in.h5'}:affinities"
    write_volume(source, affinities)
    out = f"{tmp_path / 'out.h5'}:seg"
    assert main(["segment", source, out, "--threshold", "0"]) == 2
    assert "--voxel-size" in capsys.readouterr().err
    assert main(["segment", source, out, "--threshold", "0", "--voxel-size", *map(str, ANISOTROPIC)]) == 0
    np.testing.assert_array_equal(read_volume(out), fragments(affinities, voxel_size=ANISOTROPIC)[0])
    with open_volume(out) as written:
        assert written.voxel_size == ANISOTROPIC


@pytest.mark.parametrize("voxel_size", [None, (1.0, 2.0), (0.0, 1.0, 1.0), ("a", 1, 1)])
def test_segment_rejects_a_missing_or_bad_voxel_size(affinities, voxel_size):
    with pytest.raises(NeuropilError, match="voxel size"):
        segment(affinities, voxel_size=voxel_size)


def test_segment_says_what_it_wrote_and_its_help_says_which_way_the_threshold_goes(tmp_path, capsys):
    rng = np.random.default_rng(0)
    affinities = np.clip(rng.random((3, 8, 32, 32)) * 0.2 + 0.8, 0, 1).astype(np.float32)
    affinities[1:, :, 16] = 0.0  # a wall: two objects
    write_volume(f"{tmp_path / 'a.h5'}:affs", affinities, voxel_size=(40, 8, 8))
    assert main(["segment", f"{tmp_path / 'a.h5'}:affs", f"{tmp_path / 's.h5'}:seg", "--threshold", "0.3", "0.6"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    for line, threshold in zip(lines, ("0.3", "0.6")):
        written = read_volume(f"{tmp_path / 's.h5'}:seg_t{threshold}")
        count = len(np.unique(written[written > 0]))
        assert line.startswith(f"{count} segments at threshold {threshold}: ") and "8x32x32 uint64, 40x8x8 nm" in line
    with pytest.raises(SystemExit):
        main(["segment", "--help"])
    assert "a higher threshold merges more" in " ".join(capsys.readouterr().out.split())
