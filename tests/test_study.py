import dataclasses
import json

import pytest

from neuropil.cli import main
from neuropil.errors import NeuropilError
from neuropil.experiments.study import ALL, QUICK_STUDY, findings, run_study
from neuropil.model import ModelConfig
from neuropil.train import TrainConfig

TINY = dataclasses.replace(
    QUICK_STUDY,
    train_shape=(8, 32, 32),
    test_shape=(8, 32, 32),
    thresholds=(0.3, 0.6),
    model=ModelConfig(base_channels=4, depth=2, voxel_size=QUICK_STUDY.target_voxel_size, normalization="batch"),
    train=TrainConfig(iterations=20, patch_shape=(8, 16, 16), checkpoint_every=10, learning_rate=3e-3),
)


@pytest.mark.slow
def test_study_scores_every_model_on_every_domain(tmp_path):
    scores = run_study(tmp_path, settings=TINY, progress=False)
    models = {s.model for s in scores}
    domains = {s.domain for s in scores}
    assert models == {*TINY.sources, ALL}
    assert domains == {*TINY.sources, *TINY.unseen, "cremi-like ecs 0 nm", "cremi-like ecs 30 nm"}
    assert len(scores) == len(models) * len(domains)
    for score in scores:
        assert score.cross_entropy > 0 and score.arand >= 0 and score.threshold in TINY.thresholds
    for name in models:
        assert (tmp_path / "models" / name / "checkpoint.pt").exists()
    report = (tmp_path / "report.md").read_text()
    assert "## Findings" in report and "unseen.png" in report
    assert (tmp_path / "unseen.png").stat().st_size > 1000
    results = json.loads((tmp_path / "results.json").read_text())
    assert len(results["scores"]) == len(scores) and set(results["thresholds"]) == models
    # one line per unseen domain, per model of the sweep, and the species/fixation comparison
    assert len(findings(scores, TINY)) == len(TINY.unseen) + len(models) + 1
    # a second run resumes: every model is already trained
    again = run_study(tmp_path, settings=TINY, progress=False)
    assert [s.arand for s in again] == pytest.approx([s.arand for s in scores])


def test_study_rejects_unknown_domains(tmp_path):
    with pytest.raises(NeuropilError, match="unknown synthetic domains"):
        run_study(tmp_path, settings=dataclasses.replace(TINY, unseen=("no-such-domain",)), progress=False)


def test_study_command_has_help(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["study", "--help"])
    assert stop.value.code == 0
    assert "one U-Net per synthetic source domain" in capsys.readouterr().out.replace("\n", " ")
