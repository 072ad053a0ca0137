import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from neuropil.cli import main
from neuropil.config import DemoConfig
from neuropil.experiments.demo import default_config

SOURCE = str(Path(__file__).resolve().parents[1] / "src")

# The quick demo made smaller still: every step runs, through the same code and command.
TINY = {
    "training": {
        "target_voxel_size": [25, 13, 13],
        "model": {"base_channels": 4, "depth": 2, "normalization": "batch"},
        "train": {"iterations": 80, "patch_shape": [8, 32, 32], "learning_rate": 0.01, "checkpoint_every": 40},
        "domains": {
            name: {"synthetic": name, "shape": [12, 40, 40], "seeds": [seed], "validation_seeds": [500 + seed]}
            for seed, name in enumerate(("cremi-like", "snemi-like", "fib-like"))
        },
    },
    "unseen": ["cryo-ecs"],
    "test_shape": [12, 40, 40],
    "test_seeds": {"cremi-like": 900, "snemi-like": 901, "fib-like": 902, "cryo-ecs": 903},
    "segment": {"method": "mean", "thresholds": [0.3, 0.6, 0.8]},
}


@pytest.mark.slow
def test_demo_runs_every_step_and_writes_report(tmp_path):
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "out"
    # as a cluster job runs it: stdout and stderr into a file, so progress is log lines, not bars
    log = tmp_path / "log"
    with log.open("w") as stream:
        command = [sys.executable, "-m", "neuropil", "demo", "--config", str(config_path), "--out", str(out)]
        environment = {**os.environ, "PYTHONPATH": SOURCE}
        environment.pop("NEUROPIL_PROGRESS_INTERVAL", None)
        assert subprocess.run(command, stdout=stream, stderr=subprocess.STDOUT, env=environment).returncode == 0
    printed = log.read_text()
    assert "| domain |" in printed and f"wrote report {out}/report.md" in printed
    assert len(printed.splitlines()) < 200 and "\r" not in printed, printed
    report = (out / "report.md").read_text()
    results = json.loads((out / "results.json").read_text())
    domains = [r["domain"] for r in results["results"]]
    assert len(domains) == 4 and [r["role"] for r in results["results"]].count("unseen") == 1
    for domain in domains:
        assert (out / f"{domain}.png").stat().st_size > 1000
        assert domain in report
    for row in results["results"]:
        for key in ("voi_split", "voi_merge", "arand"):
            assert 0.0 <= row["trained"][key] and 0.0 <= row["untrained"][key]
    training = [row for row in results["results"] if row["role"] == "train"]
    trained = sum(row["trained"]["arand"] for row in training) / len(training)
    untrained = sum(row["untrained"]["arand"] for row in training) / len(training)
    assert trained < untrained - 0.1, (trained, untrained)
    assert set(results["thresholds"]) == set(domains)
    assert set(results["thresholds"].values()) <= set(TINY["segment"]["thresholds"])
    assert (out / "model" / "checkpoint.pt").exists()
    assert (out / "model" / "config.yaml").exists()
    # what was run is saved next to the results, and the model's run next to the model
    assert DemoConfig.load(out / "config.yaml") == DemoConfig.parse(TINY)
    assert (
        yaml.safe_load((out / "model" / "config.yaml").read_text())["domains"].keys()
        == TINY["training"]["domains"].keys()
    )


def test_demo_command_picks_the_shipped_configs(monkeypatch, tmp_path):
    import neuropil.experiments.demo as demo

    ran = []
    monkeypatch.setattr(demo, "run_demo", lambda out_dir, *, config: ran.append(config) or [])
    assert main(["demo", "--out", str(tmp_path)]) == 0
    assert main(["demo", "--quick", "--seed", "1", "--out", str(tmp_path)]) == 0
    assert ran[0] == default_config()
    assert ran[1] == default_config(quick=True).reseeded(1)
    assert ran[1].training.domains["cremi-like"].training_seeds() == (1000,)
    assert main(["demo", "--config", str(tmp_path / "missing.yaml"), "--out", str(tmp_path)]) == 2
    with pytest.raises(SystemExit):
        main(["demo", "--quick", "--config", "x.yaml"])
