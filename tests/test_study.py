import json

import pytest

from neuropil.cli import main
from neuropil.config import StudyConfig
from neuropil.errors import NeuropilError
from neuropil.experiments.study import ALL, default_config, findings, run_study


def tiny_study(**changes) -> StudyConfig:
    """The quick study with tiny volumes, model and training."""
    quick = default_config(quick=True).model_dump()
    training = quick["training"]
    training["model"] = {"base_channels": 4, "depth": 2, "normalization": "batch"}
    training["train"] = {"iterations": 20, "patch_shape": [8, 16, 16], "checkpoint_every": 10, "learning_rate": 3e-3}
    for domain in training["domains"].values():
        domain["shape"] = [8, 32, 32]
    quick.update(test_shape=[8, 32, 32], segment={"thresholds": [0.3, 0.6]}, **changes)
    return StudyConfig.parse(quick)


@pytest.mark.slow
def test_study_scores_every_model_on_every_domain(tmp_path):
    tiny = tiny_study()
    scores = run_study(tmp_path, config=tiny, progress=False)
    models = {s.model for s in scores}
    domains = {s.domain for s in scores}
    assert models == {*tiny.training.domains, ALL}
    assert domains == {*tiny.training.domains, *tiny.unseen, "cremi-like ecs 0 nm", "cremi-like ecs 30 nm"}
    assert len(scores) == len(models) * len(domains)
    for score in scores:
        assert score.cross_entropy > 0 and score.arand >= 0 and score.threshold in tiny.segment.thresholds
    for name in models:
        assert (tmp_path / "models" / name / "checkpoint.pt").exists()
    report = (tmp_path / "report.md").read_text()
    assert "## Findings" in report and "unseen.png" in report
    assert (tmp_path / "unseen.png").stat().st_size > 1000
    results = json.loads((tmp_path / "results.json").read_text())
    assert len(results["scores"]) == len(scores) and set(results["thresholds"]) == models
    assert StudyConfig.load(tmp_path / "config.yaml") == tiny
    # one line per unseen domain, per model of the sweep, and the species/fixation comparison
    assert len(findings(scores, tiny)) == len(tiny.unseen) + len(models) + 1
    # a second run resumes: every model is already trained
    again = run_study(tmp_path, config=tiny, progress=False)
    assert [s.arand for s in again] == pytest.approx([s.arand for s in scores])


def test_study_rejects_unknown_domains():
    with pytest.raises(NeuropilError, match="unknown synthetic presets"):
        tiny_study(unseen=["no-such-domain"])
    with pytest.raises(NeuropilError, match=r"'sweep'.*not a training domain"):
        tiny_study(sweep={"domain": "cryo-ecs", "extracellular_nm": [0, 30], "seed": 950})


def test_study_command_has_help(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["study", "--help"])
    assert stop.value.code == 0
    assert "one U-Net per synthetic source domain" in capsys.readouterr().out.replace("\n", " ")
