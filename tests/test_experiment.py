"""``neuropil experiment``: sources of every kind, targets with dense, partial and no labels, the report."""

import json
from pathlib import Path

import numpy as np
import pytest

from neuropil.cli import main
from neuropil.config import ExperimentConfig
from neuropil.data.synth import synthetic_volume
from neuropil.errors import NeuropilError
from neuropil.io import write_volume

ROOT = Path(__file__).resolve().parents[1]
VOXEL = (25.0, 13.0, 13.0)


def write_own_volumes(folder: Path) -> dict[str, str]:
    """A labelled volume of one's own, the same labelled in three objects only, and raw without labels."""
    volume = synthetic_volume("cremi-like", shape=(16, 64, 64), target_voxel_size=VOXEL, seed=77)
    write_volume(f"{folder / 'own.h5'}:raw", volume.raw, voxel_size=VOXEL)
    write_volume(f"{folder / 'own.h5'}:labels", volume.labels, voxel_size=VOXEL)
    ids, sizes = np.unique(volume.labels[volume.labels > 0], return_counts=True)
    some = np.where(np.isin(volume.labels, ids[np.argsort(-sizes)[:3]]), volume.labels, 0)
    write_volume(f"{folder / 'own.h5'}:some", some, voxel_size=VOXEL)
    return {
        "raw": f"{folder / 'own.h5'}:raw",
        "labels": f"{folder / 'own.h5'}:labels",
        "some": f"{folder / 'own.h5'}:some",
    }


def tiny_config(folder: Path) -> dict:
    own = write_own_volumes(folder)
    return {
        "target_voxel_size": list(VOXEL),
        "model": {"base_channels": 2, "depth": 2},
        "train": {"iterations": 4, "patch_shape": [8, 32, 32], "checkpoint_every": 2, "validation_shape": [8, 48, 48]},
        "validation_width": 24,
        "sources": {
            "cremi-like": {"synthetic": "cremi-like", "shape": [8, 48, 48], "seeds": [1], "validation_seeds": [2]},
            "cryo-ecs": {"synthetic": "cryo-ecs", "shape": [8, 48, 48], "seeds": [3], "validation_seeds": [4]},
            "own": {"raw": own["raw"], "labels": own["labels"]},
        },
        "targets": {
            "cremi-like": {"synthetic": "cremi-like", "seed": 9, "shape": [8, 48, 48]},
            "wide-ecs": {
                "synthetic": "cremi-like",
                "seed": 9,
                "changes": {"extracellular_nm": 40},
                "shape": [8, 48, 48],
            },
            "mouse": {"synthetic": "snemi-like", "seed": 10, "shape": [8, 48, 48]},
            "dendrites": {"raw": own["raw"], "labels": own["some"], "labels_cover": "some-objects"},
            "unlabelled": {"raw": own["raw"], "labels_cover": "none"},
        },
        "models": {
            "each": True,
            "all": True,
            "variants": {"all-flat": {"sources": "all", "train": {"augment": False}}},
        },
        "segment": {"thresholds": [0.3, 0.5, 0.7]},
    }


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    folder = tmp_path_factory.mktemp("experiment")
    path = folder / "tiny.yaml"
    import yaml

    path.write_text(yaml.safe_dump(tiny_config(folder)))
    out = folder / "out"
    assert main(["experiment", str(path), "--out", str(out), "--no-progress"]) == 0
    return path, out


def test_every_model_is_scored_on_every_target_as_its_labels_allow(experiment):
    _, out = experiment
    results = json.loads((out / "results.json").read_text())
    models = [m["name"] for m in results["models"]]
    assert models == ["cremi-like", "cryo-ecs", "own", "all", "all-flat"]
    assert {m["name"]: m["sources"] for m in results["models"]}["all-flat"] == ["cremi-like", "cryo-ecs", "own"]
    assert {m["name"]: m["changes"] for m in results["models"]}["all-flat"] == {"augment": False}
    pairs = {(r["model"], r["target"]): r for r in results["results"]}
    assert set(pairs) == {
        (m, t) for m in models for t in ("cremi-like", "wide-ecs", "mouse", "dendrites", "unlabelled")
    }
    for (_, target), result in pairs.items():
        assert 0.0 <= result["near_zero_fraction"] <= 1.0
        if target == "unlabelled":
            assert result["at_best"] is None and result["truth_boundary_fraction"] is None
            continue
        assert result["at_calibrated"] is not None and result["calibrated_threshold"] in (0.3, 0.5, 0.7)
        assert result["at_best"]["voi"] <= result["at_calibrated"]["voi"] + 1e-9
        assert 0.0 <= result["at_best"]["arand"] <= 1.0
    assert pairs[("all", "dendrites")]["worst"] is not None
    assert results["targets"]["dendrites"]["coverage"] == "some-objects"
    assert results["targets"]["unlabelled"]["coverage"] == "none"
    from neuropil.io import open_volume

    views = results["views"]
    assert len(views["dendrites"]) == 2 + len(models) and len(views["unlabelled"]) == 1 + len(models)
    for address in views["dendrites"]:
        with open_volume(address) as volume:
            assert volume.voxel_size == VOXEL and volume.shape[-3:] == (16, 64, 64)


def test_the_report_embeds_every_picture_and_states_findings(experiment):
    _, out = experiment
    page = (out / "report" / "index.html").read_text()
    # the matrix, one method figure per target, the curves
    assert page.count('<img src="data:image/png;base64,') == 1 + 5 + 1
    assert "Findings" in page and "all-domain model" in page
    assert "Extracellular space hurts" in page  # cremi-like alone: wider ECS against another species
    assert page.count("<pre>neuropil view ") == 5
    markdown = (out / "report.md").read_text()
    for picture in ("matrix.png", "target-0.png", "curves.png"):
        assert f"report/{picture}" in markdown and (out / "report" / picture).stat().st_size > 1000


def test_a_second_run_reuses_the_finished_models(experiment, caplog):
    import logging

    path, out = experiment
    before = (out / "models" / "all" / "checkpoint.pt").stat().st_mtime_ns
    caplog.set_level(logging.INFO)
    assert main(["experiment", str(path), "--out", str(out), "--no-progress"]) == 0
    assert (out / "models" / "all" / "checkpoint.pt").stat().st_mtime_ns == before
    assert "validation:" not in caplog.text  # nothing trained again


def test_check_names_every_missing_dataset_with_its_fetch_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NEUROPIL_DATA", str(tmp_path))
    monkeypatch.setenv("NEUROPIL_CACHE", str(tmp_path / "cache"))
    assert main(["experiment", str(ROOT / "configs" / "paper.yaml"), "--check"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert "dataset 'snemi3d'" in error and "`neuropil data fetch snemi3d`" in error and "fib25" in error


@pytest.mark.parametrize("name", ["synthetic-ecs", "shared-real", "paper"])
def test_the_shipped_experiment_configs_are_valid_and_have_a_quick_version(name):
    config = ExperimentConfig.load(ROOT / "configs" / f"{name}.yaml")
    from neuropil.evaluate import THRESHOLD_GRID

    # `segment: {method: mean}` without thresholds still searches the whole grid, in validation too
    assert config.segment.thresholds == THRESHOLD_GRID
    assert all(config.run_config(name).train.thresholds == THRESHOLD_GRID for name in config.runs())
    quick = config.quick_version()
    assert quick.train.iterations == config.quick.iterations
    assert all(t.shape == config.quick.target_shape for t in quick.targets.values())
    assert len(config.runs()) >= 2


def test_bad_experiment_configs_are_one_line_errors(tmp_path):
    base = tiny_config(tmp_path)
    for change, words in (
        ({"targets": {"t": {"synthetic": "cremi-like"}}}, "needs 'shape"),
        ({"targets": {"t": {"dataset": "fib-gala", "synthetic": "cremi-like"}}}, "exactly one of"),
        ({"models": {"subsets": {"x": ["nope"]}}}, "needs sources among"),
        ({"models": {"each": False, "all": False}}, "no model to train"),
        ({"targets": {"t": {"raw": "a.h5:raw"}}}, "labels_cover: none"),
    ):
        with pytest.raises(NeuropilError, match=words):
            ExperimentConfig.parse({**base, **change})


def test_the_report_opens_in_a_real_browser_with_every_image_and_no_console_error(experiment, tmp_path):
    import browser

    browser.require_chromium()
    _, out = experiment
    shown = browser.render(out / "report" / "index.html", tmp_path / "report.png")
    assert shown.loaded and shown.title == "neuropil experiment"
    assert shown.images_total == 7 and shown.images_loaded == 7, shown.images_failed
    assert shown.console_errors == []
    assert shown.screenshot.read_bytes().startswith(browser.PNG_MAGIC) and shown.screenshot.stat().st_size > 20_000
