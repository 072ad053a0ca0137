import numpy as np
import pytest

from neuropil.data.resample import resample, resample_region, resampled_shape
from neuropil.errors import NeuropilError

TARGET = (25, 13, 13)


@pytest.mark.parametrize(
    "shape, voxel_size, expected",
    [
        # The method's table, written (x, y, z) there and (z, y, x) here.
        ((100, 1024, 1024), (29, 6, 6), (116, 473, 473)),  # SNEMI3D
        ((125, 1250, 1250), (40, 4, 4), (200, 385, 385)),  # CREMI
        ((520, 520, 520), (10, 10, 10), (208, 400, 400)),  # FIB-25
    ],
)
def test_resampled_shape_matches_the_method_table(shape, voxel_size, expected):
    assert resampled_shape(shape, voxel_size, TARGET) == expected


@pytest.mark.parametrize("kind", ["image", "labels", "mask"])
@pytest.mark.parametrize(
    "shape, voxel_size",
    [((10, 24, 24), (29, 6, 6)), ((5, 25, 25), (40, 4, 4)), ((26, 26, 26), (10, 10, 10)), ((3, 7, 5), (50, 4, 4))],
)
def test_resampled_arrays_have_the_computed_shape(kind, shape, voxel_size):
    rng = np.random.default_rng(0)
    array = {
        "image": rng.random(shape, dtype=np.float32),
        "labels": rng.integers(0, 9, shape, dtype=np.uint64),
        "mask": rng.random(shape) > 0.2,
    }[kind]
    result = resample(array, voxel_size=voxel_size, target_voxel_size=TARGET, kind=kind)
    assert result.shape == resampled_shape(shape, voxel_size, TARGET)
    # Hand-computed: 24*6/13 = 11.08 -> 11, 10*29/25 = 11.6 -> 12; 25*4/13 = 7.69 -> 8, 5*40/25 = 8;
    # 26*10/13 = 20, 26*10/25 = 10.4 -> 10; 7*4/13 = 2.15 -> 2, 5*4/13 = 1.54 -> 2, 3*50/25 = 6.
    expected = {(10, 24, 24): (12, 11, 11), (5, 25, 25): (8, 8, 8), (26, 26, 26): (10, 20, 20), (3, 7, 5): (6, 2, 2)}
    assert result.shape == expected[shape]


def test_labels_take_the_id_under_each_output_centre():
    labels = np.array([[1, 1, 2, 2, 3, 3]], dtype=np.uint64)
    down = resample(labels, voxel_size=(1, 1), target_voxel_size=(1, 2), kind="labels")
    np.testing.assert_array_equal(down, [[1, 2, 3]])
    up = resample(np.array([[5, 7]], dtype=np.uint32), voxel_size=(1, 2), target_voxel_size=(1, 1), kind="labels")
    np.testing.assert_array_equal(up, [[5, 5, 7, 7]])
    assert up.dtype == np.uint32


def test_labels_never_get_invented_ids():
    rng = np.random.default_rng(1)
    labels = rng.choice(np.array([0, 3, 17, 2**40], dtype=np.uint64), size=(9, 31, 29))
    result = resample(labels, voxel_size=(29, 6, 6), target_voxel_size=TARGET, kind="labels")
    assert set(np.unique(result)) <= set(np.unique(labels))
    assert result.dtype == np.uint64


def test_mask_is_conservative_by_hand():
    mask = np.array([[1, 1, 0, 1, 1, 1]], dtype=bool)
    np.testing.assert_array_equal(resample(mask, voxel_size=(1, 1), target_voxel_size=(1, 2), kind="mask"), [[1, 0, 1]])
    np.testing.assert_array_equal(resample(mask, voxel_size=(1, 1), target_voxel_size=(1, 3), kind="mask"), [[0, 1]])
    # 1.5 nm voxels over 1 nm: voxel 1 spans [1.5, 3) and overlaps source voxels 1 and 2 (out);
    # voxel 2 spans [3, 4.5) and overlaps source voxels 3 and 4 only.
    np.testing.assert_array_equal(
        resample(mask, voxel_size=(1, 1), target_voxel_size=(1, 1.5), kind="mask"), [[1, 0, 1, 1]]
    )


def test_mask_never_grows_and_a_full_mask_stays_full():
    rng = np.random.default_rng(2)
    mask = rng.random((12, 40, 40)) > 0.05
    down = resample(mask, voxel_size=(29, 6, 6), target_voxel_size=TARGET, kind="mask")
    # Every output voxel in the mask has every source voxel under its centre in the mask.
    nearest = resample(mask.astype(np.uint8), voxel_size=(29, 6, 6), target_voxel_size=TARGET, kind="labels")
    assert np.all(nearest[down] == 1)
    assert down.mean() < mask.mean()
    full = resample(np.ones((12, 40, 40), bool), voxel_size=(29, 6, 6), target_voxel_size=TARGET, kind="mask")
    assert full.all()


def test_image_downsampling_is_anti_aliased():
    # A one-voxel checkerboard aliases to a constant 0 or 1 without a prefilter.
    stripes = (np.indices((1, 64))[1] % 2).astype(np.float32)
    down = resample(stripes, voxel_size=(1, 1), target_voxel_size=(1, 2), kind="image")
    assert np.all(np.abs(down[:, 2:-2] - 0.5) < 0.1)


def test_image_matches_skimage_for_an_integer_factor():
    transform = pytest.importorskip("skimage.transform")
    image = np.random.default_rng(3).random((8, 24, 24)).astype(np.float32)
    ours = resample(image, voxel_size=(20, 4, 4), target_voxel_size=(40, 8, 8), kind="image")
    theirs = transform.resize(image, (4, 12, 12), order=1, mode="edge", anti_aliasing=True, preserve_range=True)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


@pytest.mark.parametrize("order", [1, 3])
def test_image_upsampling_reproduces_a_linear_ramp(order):
    ramp = np.tile(np.arange(40, dtype=np.float64), (4, 1))
    up = resample(ramp, voxel_size=(1, 2), target_voxel_size=(1, 1), kind="image", order=order)
    # Output centre i sits at source coordinate (i + 0.5) / 2 - 0.5. The cubic spline's edge
    # condition disturbs a few voxels next to the borders, so compare the interior.
    expected = (np.arange(80) + 0.5) / 2 - 0.5
    np.testing.assert_allclose(up[0, 20:-20], expected[20:-20], atol=1e-4)


def test_integer_images_keep_their_dtype_and_range():
    image = np.random.default_rng(4).integers(0, 256, (6, 20, 20), dtype=np.uint8)
    result = resample(image, voxel_size=(29, 6, 6), target_voxel_size=TARGET, kind="image", order=3)
    assert result.dtype == np.uint8


def test_resample_leaves_its_input_alone_and_copies_at_equal_voxel_size():
    labels = np.arange(8, dtype=np.uint64).reshape(2, 2, 2)
    kept = labels.copy()
    same = resample(labels, voxel_size=(4, 4, 4), target_voxel_size=(4, 4, 4), kind="labels")
    np.testing.assert_array_equal(same, labels)
    same[0, 0, 0] = 99
    np.testing.assert_array_equal(labels, kept)


def test_bad_resample_arguments_raise():
    with pytest.raises(NeuropilError, match="labels must be integers"):
        resample(np.zeros((2, 2), np.float32), voxel_size=(1, 1), target_voxel_size=(2, 2), kind="labels")
    with pytest.raises(NeuropilError, match="has 2 entries for a 3-D"):
        resample(np.zeros((2, 2, 2)), voxel_size=(1, 1), target_voxel_size=(2, 2, 2))
    with pytest.raises(NeuropilError, match="kind 'nope'"):
        resample(np.zeros((2, 2)), voxel_size=(1, 1), target_voxel_size=(2, 2), kind="nope")


def test_region_needs_one_step_1_slice_per_axis():
    # Fewer slices would leave the last axis at the source voxel size; a step would be ignored.
    volume = np.zeros((8, 20, 20), np.float32)
    sizes = {"voxel_size": (40, 4, 4), "target_voxel_size": (40, 8, 8)}
    assert resample_region(volume, (slice(0, 4), slice(0, 5), slice(2, 9)), **sizes).shape == (4, 5, 7)
    with pytest.raises(NeuropilError, match="2 slices for a 3-D volume"):
        resample_region(volume, (slice(0, 4), slice(0, 5)), **sizes)
    with pytest.raises(NeuropilError, match="step 1"):
        resample_region(volume, (slice(0, 4), slice(0, 5), slice(0, 10, 2)), **sizes)


def test_labels_on_grid_fit_the_ground_truth_shape_and_refuse_another_volume():
    from neuropil.data.resample import labels_on_grid

    z, y, x = np.indices((50, 100, 20))
    labels = (1 + z // 10 * 100 + y // 10 * 10 + x // 10).astype(np.uint64)  # 10-voxel cubes
    coarse = resample(labels, voxel_size=(10, 10, 10), target_voxel_size=(25, 13, 13), kind="labels")
    assert coarse.shape == (20, 77, 15)
    back = labels_on_grid(coarse, voxel_size=(25, 13, 13), target_voxel_size=(10, 10, 10), shape=labels.shape)
    assert back.shape == labels.shape and set(np.unique(back)) <= set(np.unique(coarse))
    assert (back == labels).mean() > 0.8  # only voxels next to a cube's face change
    with pytest.raises(NeuropilError, match="not the same volume"):
        labels_on_grid(coarse, voxel_size=(25, 13, 13), target_voxel_size=(10, 10, 10), shape=(60, 100, 20))
