import numpy as np
import pytest

from neuropil.errors import NeuropilError
from neuropil.segment import agglomerate
from neuropil.segment.learned import MergeClassifier, train


@pytest.fixture
def toy():
    """Two objects, split into 2x4x4 fragments, with a noisy boundary map."""
    rng = np.random.default_rng(0)
    z, y, x = np.indices((8, 16, 16))
    fragments = ((z // 2) * 16 + (y // 4) * 4 + x // 4 + 1).astype(np.uint64)
    gt = np.where(x < 8, 1, 2)
    boundaries = rng.uniform(0, 0.3, size=gt.shape).astype(np.float32)
    boundaries[:, :, 7:9] = rng.uniform(0.6, 1.0, size=(8, 16, 2))
    return boundaries, fragments, gt


def test_learned_agglomeration_recovers_the_two_objects(toy):
    boundaries, fragments, gt = toy
    model = train(boundaries, fragments, gt, epochs=2, n_estimators=10)
    (result,) = agglomerate(boundaries, fragments, method="learned", model=model, thresholds=[0.5])
    assert len(np.unique(result[gt == 1])) == 1 or len(np.unique(result[gt == 1])) < 16
    assert not np.intersect1d(np.unique(result[gt == 1]), np.unique(result[gt == 2])).size


def test_forest_arrays_match_scikit_learn():
    from sklearn.ensemble import RandomForestClassifier

    from neuropil.segment.learned import forest_from_sklearn

    rng = np.random.default_rng(1)
    features = rng.normal(size=(200, 5))
    labels = features[:, 0] + 0.3 * rng.normal(size=200) > 0
    classifier = RandomForestClassifier(n_estimators=7, random_state=0).fit(features, labels)
    model = MergeClassifier(forest_from_sklearn(classifier), 8, ())
    np.testing.assert_allclose(model.probability(features), classifier.predict_proba(features)[:, 1], atol=1e-12)


def test_model_survives_save_and_load(tmp_path, toy):
    boundaries, fragments, gt = toy
    model = train(boundaries, fragments, gt, epochs=1, n_estimators=5)
    model.save(tmp_path / "model.npz")
    loaded = MergeClassifier.load(tmp_path / "model.npz")
    first = agglomerate(boundaries, fragments, method="learned", model=model, thresholds=[0.3, 0.7])
    second = agglomerate(boundaries, fragments, method="learned", model=loaded, thresholds=[0.3, 0.7])
    for a, b in zip(first, second):
        assert np.array_equal(a, b)


def test_classifier_trained_with_other_features_is_rejected(tmp_path, toy):
    boundaries, fragments, gt = toy
    model = train(boundaries, fragments, gt, epochs=1, n_estimators=2)
    other = MergeClassifier(model.forest, model.n_bins, model.feature_names[:-1] + ("something_else",))
    other.save(tmp_path / "other.npz")
    with pytest.raises(NeuropilError, match="other features"):
        MergeClassifier.load(tmp_path / "other.npz")


def test_corrupt_trees_are_rejected(tmp_path, toy):
    boundaries, fragments, gt = toy
    model = train(boundaries, fragments, gt, epochs=1, n_estimators=2)
    left = model.forest.left.copy()
    left[model.forest.feature >= 0] = 10**9
    broken = MergeClassifier(model.forest._replace(left=left), model.n_bins, model.feature_names)
    broken.save(tmp_path / "broken.npz")
    with pytest.raises(NeuropilError, match="inconsistent"):
        MergeClassifier.load(tmp_path / "broken.npz")


def test_learned_without_model_is_an_error(toy):
    boundaries, fragments, _ = toy
    with pytest.raises(NeuropilError, match="model"):
        agglomerate(boundaries, fragments, method="learned")


def test_train_and_segment_commands(tmp_path, toy):
    from neuropil.cli import main
    from neuropil.io import read_volume, write_volume

    boundaries, fragments, gt = toy
    write_volume(f"{tmp_path}/in.h5:boundaries", boundaries)
    write_volume(f"{tmp_path}/in.h5:fragments", fragments)
    write_volume(f"{tmp_path}/in.h5:gt", gt.astype(np.uint64))
    common = ["--fragments", f"{tmp_path}/in.h5:fragments"]
    assert (
        main(
            [
                "agglomeration",
                "train",
                *common,
                "--boundaries",
                f"{tmp_path}/in.h5:boundaries",
                "--gt",
                f"{tmp_path}/in.h5:gt",
                "--out",
                str(tmp_path / "model.npz"),
                "--trees",
                "5",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "segment",
                f"{tmp_path}/in.h5:boundaries",
                f"{tmp_path}/out.h5:seg",
                *common,
                "--method",
                "learned",
                "--model",
                str(tmp_path / "model.npz"),
                "--threshold",
                "0.3",
                "0.6",
            ]
        )
        == 0
    )
    assert read_volume(f"{tmp_path}/out.h5:seg_t0.3").shape == fragments.shape
    assert main(["segment", f"{tmp_path}/in.h5:boundaries", f"{tmp_path}/out.h5:mean", *common]) == 0
    assert (
        main(
            [
                "segment",
                f"{tmp_path}/in.h5:boundaries",
                f"{tmp_path}/out.h5:bad",
                "--fragments",
                f"{tmp_path}/in.h5:gt",
                "--method",
                "learned",
            ]
        )
        == 2
    )
    image = (np.random.default_rng(3).uniform(size=gt.shape) * 255).astype(np.uint8)
    write_volume(f"{tmp_path}/in.h5:image", image)
    assert (
        main(
            [
                "agglomeration",
                "train",
                *common,
                "--boundaries",
                f"{tmp_path}/in.h5:boundaries",
                "--gt",
                f"{tmp_path}/in.h5:gt",
                "--image",
                f"{tmp_path}/in.h5:image",
                "--out",
                str(tmp_path / "image.npz"),
                "--trees",
                "5",
                "--epochs",
                "2",
            ]
        )
        == 0
    )
    with_image = [
        f"{tmp_path}/in.h5:boundaries",
        *common,
        "--method",
        "learned",
        "--model",
        str(tmp_path / "image.npz"),
    ]
    assert (
        main(
            [
                "segment",
                *with_image[:1],
                f"{tmp_path}/out.h5:img",
                *with_image[1:],
                "--image",
                f"{tmp_path}/in.h5:image",
            ]
        )
        == 0
    )
    assert read_volume(f"{tmp_path}/out.h5:img").shape == fragments.shape
    assert main(["segment", *with_image[:1], f"{tmp_path}/out.h5:noimg", *with_image[1:]]) == 2


def test_image_channel_features_by_hand():
    from neuropil.segment import graph
    from neuropil.segment.affinities import as_affinities
    from neuropil.segment.features import all_edge_features
    from neuropil.segment.learned import feature_names, statistics, voxel_boundaries

    fragments = np.array([[[1, 1, 2, 2]]], dtype=np.uint64)
    boundaries = np.array([[[0.1, 0.3, 0.3, 0.1]]], dtype=np.float32)
    image = np.array([[[0, 51, 102, 255]]], dtype=np.uint8)  # 0, 0.2, 0.4, 1.0
    values = as_affinities(boundaries)
    contacts = graph.contacts(values, fragments)
    edge_stats, node_stats = statistics(contacts, voxel_boundaries(boundaries, values), 8, image)
    features = all_edge_features(contacts.u, contacts.v, edge_stats, node_stats, n_bins=8)
    names = feature_names(8, image=True)
    assert features.shape == (1, len(names))
    got = dict(zip(names, features[0]))
    # the contact joins the voxels of 0.2 and 0.4; the regions hold (0, 0.2) and (0.4, 1.0)
    expected = {
        "image_contact_mean": 0.3,
        "image_contact_std": 0.0,
        "smaller_image_mean": 0.1,
        "smaller_image_std": 0.1,
        "larger_image_mean": 0.7,
        "larger_image_std": 0.3,
        "image_mean_difference": 0.6,
        # the contact (0.3) against the closer interior (0.1)
        "image_contrast": 0.2,
        # every voxel is away from boundaries: histogram bins {0, 1} against {3, 7} of 8
        "interior_image_distance": 1.0,
        "interior_image_mean_difference": (3.5 + 7.5) / 16 - (0.5 + 1.5) / 16,
        # boundary 0.3 across the contact, 0.2 inside each region
        "boundary_mean": 0.3,
        "boundary_contrast": 0.1,
        # the one contact is all of each region's surface
        "smaller_surface_fraction": 1.0,
        "larger_surface_fraction": 1.0,
    }
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-6), name


def test_pair_shape_features_by_hand():
    """Two rods end to end continue each other; two rods side by side do not."""
    from neuropil.segment import graph
    from neuropil.segment.affinities import as_affinities
    from neuropil.segment.features import all_edge_features
    from neuropil.segment.learned import feature_names, statistics, voxel_boundaries

    def pair_features(fragments):
        boundaries = np.full(fragments.shape, 0.2, dtype=np.float32)
        values = as_affinities(boundaries)
        contacts = graph.contacts(values, fragments)
        edge_stats, node_stats = statistics(contacts, voxel_boundaries(boundaries, values), 8, None)
        features = all_edge_features(contacts.u, contacts.v, edge_stats, node_stats, n_bins=8)
        return dict(zip(feature_names(8), features[0]))

    end_to_end = np.zeros((2, 2, 24), dtype=np.uint64)
    end_to_end[..., :12], end_to_end[..., 12:] = 1, 2
    side_by_side = np.zeros((2, 4, 12), dtype=np.uint64)
    side_by_side[:, :2], side_by_side[:, 2:] = 1, 2
    along, across = pair_features(end_to_end), pair_features(side_by_side)
    for got in (along, across):
        assert got["axes_alignment"] == pytest.approx(1.0)  # all rods lie along x
    # the line between the centres follows both rods' axes, or crosses them
    for name in ("offset_along_smaller_axis", "offset_along_larger_axis"):
        assert along[name] == pytest.approx(1.0) and across[name] == pytest.approx(0.0, abs=1e-9)
    # a rod twice as long is more elongated; a pair side by side is a thicker rod
    assert along["merged_elongation_change"] > 0 > across["merged_elongation_change"]


@pytest.mark.parametrize("image", [False, True])
def test_features_after_a_merge_equal_those_of_the_merged_fragments(image):
    from neuropil.segment import graph, merge
    from neuropil.segment.affinities import as_affinities
    from neuropil.segment.features import all_edge_features
    from neuropil.segment.learned import statistics, voxel_boundaries

    rng = np.random.default_rng(4)
    fragments = np.repeat(np.repeat(np.array([[[1, 1, 2, 2, 3, 3, 4, 4]]], dtype=np.uint64), 3, axis=0), 4, axis=1)
    boundaries = rng.uniform(0.0, 0.6, size=fragments.shape).astype(np.float32)
    boundaries[..., 1:3] = rng.uniform(0.0, 0.05, size=boundaries[..., 1:3].shape)  # 1 and 2 merge first
    boundaries[..., 5:7] = 0.95  # 3 and 4 merge last
    pixels = (rng.uniform(size=fragments.shape) * 255).astype(np.uint8) if image else None

    def examples(fragment_ids):
        values = as_affinities(boundaries)
        contacts = graph.contacts(values, fragment_ids)
        edge_stats, node_stats = statistics(contacts, voxel_boundaries(boundaries, values), 8, pixels)
        return contacts, edge_stats, node_stats

    contacts, edge_stats, node_stats = examples(fragments)
    same_object = np.ones(contacts.n_nodes, dtype=np.int64)
    features, labels = merge.learning_examples(
        contacts,
        edge_stats,
        scoring=merge.Scoring("boundary_mean", n_bins=8),
        node_stats=node_stats,
        node_label=same_object,
    )
    assert labels.all() and len(features) == 3
    # the second example is the edge between the merged (1, 2) and 3
    merged = np.where(fragments == 2, 1, fragments)
    contacts, edge_stats, node_stats = examples(merged)
    direct = all_edge_features(contacts.u, contacts.v, edge_stats, node_stats, n_bins=8)
    first_edge = int(np.flatnonzero((contacts.ids[contacts.u] == 1) & (contacts.ids[contacts.v] == 3))[0])
    np.testing.assert_allclose(features[1], direct[first_edge], atol=1e-9)


def test_merge_cost_is_the_voi_change_of_a_wrong_merge():
    from neuropil.segment.learned import feature_names, merge_cost

    names = feature_names(8)
    features = np.zeros((2, len(names)))
    features[:, names.index("smaller_log_size")] = np.log([1.0, 10.0])
    features[:, names.index("larger_log_size")] = np.log([1.0, 30.0])
    expected = [2 * np.log(2), 40 * np.log(40) - 10 * np.log(10) - 30 * np.log(30)]
    np.testing.assert_allclose(merge_cost(features, 8), expected)


def test_classifier_with_image_needs_the_image(tmp_path, toy):
    boundaries, fragments, gt = toy
    image = (np.random.default_rng(2).uniform(size=gt.shape) * 255).astype(np.uint8)
    model = train(boundaries, fragments, gt, image=image, epochs=2, n_estimators=10)
    model.save(tmp_path / "model.npz")
    loaded = MergeClassifier.load(tmp_path / "model.npz")
    assert loaded.image and loaded.feature_names == model.feature_names
    (result,) = agglomerate(boundaries, fragments, method="learned", model=loaded, image=image, thresholds=[0.5])
    assert not np.intersect1d(np.unique(result[gt == 1]), np.unique(result[gt == 2])).size
    with pytest.raises(NeuropilError, match="image"):
        agglomerate(boundaries, fragments, method="learned", model=loaded)
    with pytest.raises(NeuropilError, match="image"):
        agglomerate(boundaries, fragments, method="mean", image=image)
    plain = train(boundaries, fragments, gt, epochs=1, n_estimators=2)
    with pytest.raises(NeuropilError, match="image"):
        agglomerate(boundaries, fragments, method="learned", model=plain, image=image)
    with pytest.raises(NeuropilError, match="image shape"):
        agglomerate(boundaries, fragments, method="learned", model=loaded, image=image[:, :4])


def test_classifier_file_errors_are_one_line(tmp_path):
    from neuropil.segment.learned import MergeClassifier

    with pytest.raises(NeuropilError, match="no such merge classifier"):
        MergeClassifier.load(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    with pytest.raises(NeuropilError, match="not a neuropil merge classifier") as raised:
        MergeClassifier.load(tmp_path / "bad.npz")
    assert "\n" not in str(raised.value)


VERSION_3_NAMES = [
    "log_contact",
    "boundary_mean",
    "boundary_std",
    "boundary_q10",
    "boundary_q50",
    "boundary_q90",
    "boundary_hist_0_of_2",
    "boundary_hist_1_of_2",
    "smaller_log_size",
    "smaller_inside_mean",
    "smaller_inside_std",
    "smaller_elongation",
    "larger_log_size",
    "larger_inside_mean",
    "larger_inside_std",
    "larger_elongation",
    "contact_per_surface",
    "log_size_ratio",
    "boundary_contrast",
    "smaller_surface_fraction",
    "larger_surface_fraction",
    "merged_elongation",
    "merged_elongation_change",
    "axes_alignment",
    "offset_along_smaller_axis",
    "offset_along_larger_axis",
]
"""The features of version 3 classifier files with 2 bins (the image channel adds VERSION_3_IMAGE_NAMES)."""
VERSION_3_IMAGE_NAMES = [
    "image_contact_mean",
    "image_contact_std",
    "smaller_image_mean",
    "smaller_image_std",
    "larger_image_mean",
    "larger_image_std",
    "image_mean_difference",
    "image_contrast",
    "interior_image_distance",
    "interior_image_mean_difference",
]


def test_feature_names_are_those_of_version_3_files():
    from neuropil.segment.learned import feature_names

    assert feature_names(2) == VERSION_3_NAMES
    assert feature_names(2, image=True) == VERSION_3_NAMES + VERSION_3_IMAGE_NAMES


def test_a_version_3_file_written_by_hand_loads_and_segments(tmp_path, toy):
    import json

    boundaries, fragments, gt = toy
    # one stump: merge where the mean boundary value across the contact is <= 0.5
    stump = {
        "feature": np.array([VERSION_3_NAMES.index("boundary_mean"), -1, -1]),
        "threshold": np.array([0.5, -2.0, -2.0]),
        "left": np.array([1, -1, -1]),
        "right": np.array([2, -1, -1]),
        "probability": np.array([0.5, 1.0, 0.0]),
        "roots": np.array([0]),
    }
    metadata = {
        "format": "neuropil-merge-classifier",
        "version": 3,
        "n_bins": 2,
        "image": False,
        "feature_names": VERSION_3_NAMES,
    }
    np.savez_compressed(tmp_path / "stump.npz", metadata=np.array(json.dumps(metadata)), **stump)
    model = MergeClassifier.load(tmp_path / "stump.npz")
    (result,) = agglomerate(boundaries, fragments, method="learned", model=model, thresholds=[0.5])
    # contacts across x = 7|8 have boundary values of 0.6-1.0 on both sides; all others mostly below 0.3
    assert len(np.unique(result[gt == 1])) == 1 and len(np.unique(result[gt == 2])) == 1
    assert np.unique(result[gt == 1])[0] != np.unique(result[gt == 2])[0]


def _row_of_three(boundary_between):
    """Fragments 1, 2, 3 in a row, with the given boundary values at the contacts 1|2 and 2|3."""
    from neuropil.segment import graph
    from neuropil.segment.affinities import as_affinities
    from neuropil.segment.learned import statistics, voxel_boundaries

    fragments = np.repeat(np.array([[[1, 1, 2, 2, 3, 3]]], dtype=np.uint64), 2, axis=1)
    boundaries = np.full(fragments.shape, 0.1, dtype=np.float32)
    boundaries[..., 1:3] = boundary_between[0]
    boundaries[..., 3:5] = boundary_between[1]
    values = as_affinities(boundaries)
    contacts = graph.contacts(values, fragments)
    return (contacts, *statistics(contacts, voxel_boundaries(boundaries, values), 4, None))


def test_learning_examples_learn_from_false_merges_without_making_them():
    from neuropil.segment import merge
    from neuropil.segment.features import feature_names

    contacts, edge_stats, node_stats = _row_of_three((0.2, 0.4))
    policy = merge.Scoring("boundary_mean", n_bins=4)

    def examples(node_label):
        return merge.learning_examples(
            contacts, edge_stats, scoring=policy, node_stats=node_stats, node_label=np.array(node_label)
        )

    # 1|2 is reached first and merged; the contact of (1, 2) with 3 is a false merge, learned from
    features, labels = examples([1, 1, 2])
    assert labels.tolist() == [True, False]
    assert features.shape == (2, len(feature_names(4)))
    # the second example sees the merged region: eight voxels against four
    sizes = features[1, [feature_names(4).index(f"{region}_log_size") for region in ("smaller", "larger")]]
    np.testing.assert_allclose(np.exp(sizes), [4.0, 8.0])
    # an edge to a node of unknown object gives no example and no merge
    assert examples([1, 0, 2]).labels.size == 0
    # the same order without ground truth merges all
    history = merge.merge(contacts, edge_stats, scoring=policy, node_stats=node_stats)
    assert history.score.size == 2 and history.score[0] < history.score[1]


def test_merge_checks_its_input():
    from neuropil.segment import merge

    contacts, edge_stats, node_stats = _row_of_three((0.2, 0.4))
    learned = merge.Scoring("boundary_mean", n_bins=4)
    with pytest.raises(NeuropilError, match="node statistics have 12 columns"):
        merge.merge(contacts, edge_stats, scoring=learned, node_stats=node_stats[:, :-1])
    with pytest.raises(NeuropilError, match="edge statistics have 7 columns, not the 5 of 2 bins"):
        merge.merge(contacts, edge_stats, scoring=merge.Scoring("boundary_mean", n_bins=2), node_stats=node_stats)
    with pytest.raises(NeuropilError, match="u < v"):
        merge.merge(merge.Graph(3, contacts.v, contacts.u), edge_stats, scoring=learned, node_stats=node_stats)
    with pytest.raises(NeuropilError, match="unknown scoring mode 'median'"):
        merge.Scoring("median")
    with pytest.raises(NeuropilError, match="needs a decision forest"):
        merge.Scoring("learned", n_bins=4)
    with pytest.raises(NeuropilError, match="node labels"):
        merge.learning_examples(contacts, edge_stats, scoring=learned, node_stats=node_stats, node_label=[1])


def test_every_feature_is_computed():
    from neuropil.segment import features, graph
    from neuropil.segment.affinities import as_affinities
    from neuropil.segment.learned import statistics, voxel_boundaries

    rng = np.random.default_rng(5)
    fragments = rng.integers(1, 6, size=(4, 6, 6)).astype(np.uint64)
    boundaries = rng.uniform(size=fragments.shape).astype(np.float32)
    image = (rng.uniform(size=fragments.shape) * 255).astype(np.uint8)
    values = as_affinities(boundaries)
    contacts = graph.contacts(values, fragments)
    for pixels in (None, image):
        edge_stats, node_stats = statistics(contacts, voxel_boundaries(boundaries, values), 3, pixels)
        layout = features.layout(3, pixels is not None)
        assert edge_stats.shape[1] == layout.edge_columns and node_stats.shape[1] == layout.node_columns
        computed = features.all_edge_features(contacts.u, contacts.v, edge_stats, node_stats, n_bins=3)
        # a feature left unwritten would be NaN
        assert computed.shape == (contacts.n_edges, len(features.feature_names(3, pixels is not None)))
        assert np.isfinite(computed).all()
