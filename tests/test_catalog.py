import json

import h5py
import imageio.v3 as iio
import numpy as np
import pytest

from neuropil.cli import main
from neuropil.conventions import LabelZero
from neuropil.data.catalog import LabelCoverage, get_dataset, load_catalog
from neuropil.data.info import dataset_info
from neuropil.data.labels import load_training_volume
from neuropil.errors import NeuropilError


@pytest.fixture
def user_catalog(tmp_path, monkeypatch):
    """A user catalog with one dataset in tmp_path, named by $NEUROPIL_CATALOG."""
    monkeypatch.setenv("NEUROPIL_DATA", str(tmp_path / "no-data-root"))
    monkeypatch.setenv("NEUROPIL_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    with h5py.File(tmp_path / "vol.h5", "w") as file:
        file["raw"] = rng.integers(0, 255, (4, 30, 40), dtype=np.uint8)
        file["labels"] = np.repeat(np.arange(1, 5, dtype=np.uint32), 10).reshape(1, 1, 40).repeat(30, 1).repeat(4, 0)
        file["short"] = np.zeros((4, 30, 39), np.uint32)
        file["float"] = np.zeros((4, 30, 40), np.float32)
        file["empty"] = np.zeros((0, 30, 40), np.uint8)
        resolved = file.create_dataset("resolved", data=np.zeros((4, 30, 40), np.uint32))
        resolved.attrs["resolution"] = [30.0, 6.0, 6.0]
    path = tmp_path / "mine.yaml"
    path.write_text(
        "datasets:\n"
        "  mine:\n"
        "    root: .\n"
        "    modality: toy\n"
        "    voxel_size: [40, 4, 4]\n"
        "    labels: some-objects\n"
        "    volumes:\n"
        "      a: {raw: 'vol.h5:raw', labels: 'vol.h5:labels', shape: [4, 30, 40]}\n"
        "      short: {raw: 'vol.h5:raw', labels: 'vol.h5:short'}\n"
        "      float: {raw: 'vol.h5:raw', labels: 'vol.h5:float'}\n"
        "      empty: {raw: 'vol.h5:empty', labels: 'vol.h5:empty'}\n"
        "      resolved: {raw: 'vol.h5:raw', labels: 'vol.h5:resolved'}\n"
        "      wrongshape: {raw: 'vol.h5:raw', labels: 'vol.h5:labels', shape: [5, 30, 40]}\n"
        "      missing: {raw: 'gone.h5:raw', labels: 'vol.h5:labels'}\n"
        "      nokey: {raw: 'vol.h5:nope', labels: 'vol.h5:labels'}\n"
    )
    monkeypatch.setenv("NEUROPIL_CATALOG", str(path))
    return path


def test_builtin_catalog_declares_the_method_datasets(monkeypatch):
    monkeypatch.delenv("NEUROPIL_CATALOG", raising=False)
    catalog = load_catalog()
    assert {
        "snemi3d",
        "cremi-a",
        "cremi-b",
        "cremi-c",
        "fib25",
        "fib-gala",
        "snemi-mini",
        "isbi2012",
        "vnc-gerhard2013",
    } <= set(catalog)
    assert catalog["snemi3d"].voxel_size == (29, 6, 6)
    assert catalog["cremi-b"].voxel_size == (40, 4, 4)
    assert catalog["fib25"].voxel_size == (10, 10, 10)
    assert catalog["cremi-c"].volumes["train"].labels == "sample_C_20160501.hdf:volumes/labels/neuron_ids"
    assert catalog["isbi2012"].labels is LabelCoverage.IN_PLANE
    for dataset in catalog.values():
        for file in dataset.files:
            # No invented checksums: either a real sha256 or none, with a note saying so.
            assert file.sha256 is None or len(file.sha256) == 64
            if file.sha256 is None:
                assert "not" in dataset.checksum_note or "no " in dataset.checksum_note


def test_user_catalog_adds_datasets_and_resolves_against_its_folder(user_catalog, tmp_path):
    dataset = get_dataset("mine")
    assert dataset.address("vol.h5:raw") == f"{tmp_path}/vol.h5:raw"
    volume = load_training_volume("mine", "a")
    assert volume.labels.dtype == np.uint64 and volume.raw.shape == (4, 30, 40)
    # some objects only: label 0 is unknown, so affinities touching it are masked.
    assert volume.label_zero is LabelZero.UNKNOWN and not volume.in_plane_only


def test_training_volume_is_rescaled_to_the_target(user_catalog):
    volume = load_training_volume("mine", "a", target_voxel_size=(25, 13, 13))
    assert volume.raw.shape == volume.labels.shape == (6, 9, 12)
    assert set(np.unique(volume.labels)) <= {1, 2, 3, 4}
    assert volume.voxel_size == (25.0, 13.0, 13.0)


@pytest.mark.parametrize(
    "volume, message",
    [
        ("short", r"raw .*vol\.h5:raw has shape \(4, 30, 40\) but labels .*vol\.h5:short have \(4, 30, 39\)"),
        ("float", r"vol\.h5:float: labels must be integers, got float32"),
        ("empty", r"vol\.h5:empty: empty volume"),
        ("resolved", r"vol\.h5:resolved: voxel size mismatch: the file says \(30\.0, 6\.0, 6\.0\) nm"),
        ("wrongshape", r"vol\.h5:raw: shape \(4, 30, 40\), the catalog expects \(5, 30, 40\)"),
        ("missing", r"gone\.h5: no such file"),
        ("nokey", r"vol\.h5: no dataset 'nope'"),
    ],
)
def test_bad_volumes_raise_one_line_errors(user_catalog, volume, message):
    with pytest.raises(NeuropilError, match=message) as caught:
        load_training_volume("mine", volume)
    assert "\n" not in str(caught.value)


def test_bad_catalog_entries_name_file_dataset_and_key(tmp_path, monkeypatch):
    path = tmp_path / "bad.yaml"
    path.write_text("datasets:\n  broken:\n    voxel_size: [40, 4]\n    volumes: {a: {raw: x.h5:raw}}\n")
    monkeypatch.setenv("NEUROPIL_CATALOG", str(path))
    with pytest.raises(NeuropilError, match=r"bad\.yaml: dataset 'broken': voxel_size"):
        load_catalog()
    path.write_text("datasets:\n  broken:\n    voxel_size: [40, 4, 4]\n    labels: sparse\n    volumes: {a: {}}\n")
    with pytest.raises(NeuropilError, match=r"dataset 'broken': labels"):
        load_catalog()


def test_cli_lists_and_describes(user_catalog, tmp_path, capsys):
    assert main(["data", "list"]) == 0
    assert "mine" in capsys.readouterr().out
    assert main(["data", "info", "mine", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["volumes"]["a"]["labels"]["label_ids"] == 4
    assert info["volumes"]["missing"]["raw"]["present"] is False
    assert "no dataset 'nope'" in info["volumes"]["nokey"]["raw"]["error"]
    assert main(["data", "info", f"{tmp_path}/vol.h5:resolved", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["voxel_size"] == [30.0, 6.0, 6.0]


@pytest.mark.parametrize(
    "argv",
    [["data", "info", "nothing-here.h5:raw"], ["data", "info", "not-a-dataset"], ["data", "fetch", "not-a-dataset"]],
)
def test_cli_bad_input_exits_2_with_one_line(user_catalog, capsys, argv):
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith("neuropil: error: ") and error.count("\n") == 1


# ----------------------------------------------------------------------------- the shared sets

SHARED: dict[str, dict[str, tuple]] = {
    # dataset: volume -> (shape, raw dtype, labels dtype, voxel size, number of label ids or the codes)
    "fib-gala": {
        "train": ((50, 100, 200), "uint8", "int32", (10, 10, 10), 87),
        "test": ((50, 100, 200), "uint8", "int32", (10, 10, 10), 132),
    },
    "snemi-mini": {"train": ((32, 160, 160), None, "uint8", (29, 6, 6), 27)},
    # semantic label maps: every code present, 0 included (PROVENANCE.md of each set)
    "isbi2012": {"train": ((30, 512, 512), "uint8", "uint8", (50, 4, 4), [0, 255])},
    "vnc-gerhard2013": {
        "stack1": ((20, 1024, 1024), "uint8", "uint8", (50, 4.6, 4.6), [0, 32, 64, 96, 128, 159, 191, 223, 255])
    },
}


@pytest.mark.parametrize("name", sorted(SHARED))
def test_every_shared_set_loads_through_the_catalog(shared_data, name):
    info = dataset_info(get_dataset(name))
    for volume, (shape, raw_dtype, labels_dtype, voxel_size, ids) in SHARED[name].items():
        facts = info["volumes"][volume]
        if raw_dtype is None:
            assert "raw" not in facts
        else:
            assert (tuple(facts["raw"]["shape"]), facts["raw"]["dtype"]) == (shape, raw_dtype)
            assert tuple(facts["raw"]["voxel_size"]) == pytest.approx(voxel_size)
        labels = facts["labels"]
        assert (tuple(labels["shape"]), labels["dtype"]) == (shape, labels_dtype)
        assert labels.get("label_ids", labels.get("codes")) == ids


def test_fib_gala_png_slices_equal_the_hdf5_raw(shared_data):
    from neuropil.io import read_volume

    dataset = get_dataset("fib-gala")
    volume = dataset.volumes["train"]
    np.testing.assert_array_equal(
        read_volume(dataset.address(volume.extra["raw_png"])), read_volume(dataset.address(volume.raw))
    )


@pytest.mark.parametrize("name, objects_at_least", [("isbi2012", 1000), ("vnc-gerhard2013", 1000)])
def test_in_plane_sets_become_2d_instances_with_z_masked(shared_data, name, objects_at_least):
    volume = load_training_volume(name)
    assert volume.in_plane_only and volume.label_zero is LabelZero.BOUNDARY
    assert volume.labels.dtype == np.uint64
    assert len(np.unique(volume.labels)) - 1 >= objects_at_least
    # No instance spans two sections: each id's voxels all lie in the last section that holds it.
    last_section = np.zeros(int(volume.labels.max()) + 1, dtype=np.intp)
    for z, section in enumerate(volume.labels):
        last_section[section] = z
    for z, section in enumerate(volume.labels):
        assert (last_section[section[section > 0]] == z).all()


def test_vnc_synapses_are_unknown_and_every_code_is_named(shared_data, caplog):
    volume = load_training_volume("vnc-gerhard2013")
    codes = np.asarray(iio.imread(shared_data / "vnc-gerhard2013/stack1/labels/labels00000000.png"))
    np.testing.assert_array_equal(~volume.known[0], codes == 223)
    assert "not named by the catalog" not in caplog.text


def test_snemi_mini_refuses_training_without_raw(shared_data):
    with pytest.raises(NeuropilError, match="snemi-mini/train: has no raw image"):
        load_training_volume("snemi-mini")


def test_cli_info_of_an_unknown_name_says_it_is_neither_dataset_nor_address(user_catalog, capsys):
    assert main(["data", "info", "not-a-dataset"]) == 2
    error = capsys.readouterr().err
    assert "'not-a-dataset' is neither a catalog dataset" in error and "mine" in error
