"""``neuropil study``: the shipped domain-bias study, the experiment of ``synthetic-ecs.yaml``."""

from pathlib import Path

import yaml

from neuropil.cli import main
from neuropil.config import ExperimentConfig
from neuropil.experiments import common

ROOT = Path(__file__).resolve().parents[1]


def test_the_shipped_study_is_configs_synthetic_ecs():
    shipped = ExperimentConfig.load(common.shipped_config("synthetic-ecs"))
    assert shipped == ExperimentConfig.load(ROOT / "configs" / "synthetic-ecs.yaml")
    assert set(shipped.runs()) == {"cremi-like", "snemi-like", "fib-like", "all", "all-ecs-aug"}
    assert shipped.runs()["all-ecs-aug"][1]["augment"]["open_gaps"]["probability"] > 0
    assert not shipped.train.augment.enabled


def test_study_runs_the_shipped_experiment_and_prints_its_findings(tmp_path, monkeypatch, capsys):
    from test_experiment import tiny_config

    config = tiny_config(tmp_path)
    config["sources"].pop("own")
    config["targets"] = {k: v for k, v in config["targets"].items() if k in ("cremi-like", "wide-ecs", "mouse")}
    path = tmp_path / "synthetic-ecs.yaml"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setattr(common, "shipped_config", lambda name: path)
    assert main(["study", "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "Extracellular space hurts" in printed and "report/index.html" in printed
    assert (tmp_path / "out" / "report" / "index.html").exists()


def test_study_command_has_help(capsys):
    try:
        main(["study", "--help"])
    except SystemExit as exit_:
        assert exit_.code == 0
    assert "synthetic-ecs.yaml" in capsys.readouterr().out
