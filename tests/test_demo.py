import json

import pytest

from neuropil.cli import main


@pytest.mark.slow
def test_quick_demo_runs_every_step_and_writes_report(tmp_path, capsys):
    assert main(["demo", "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| domain |" in out
    report = (tmp_path / "report.md").read_text()
    results = json.loads((tmp_path / "results.json").read_text())
    domains = [r["domain"] for r in results["results"]]
    assert len(domains) == 4 and [r["role"] for r in results["results"]].count("unseen") == 1
    for domain in domains:
        assert (tmp_path / f"{domain}.png").stat().st_size > 1000
        assert domain in report
    for row in results["results"]:
        for key in ("voi_split", "voi_merge", "arand"):
            assert 0.0 <= row["trained"][key] and 0.0 <= row["untrained"][key]
    training = [row for row in results["results"] if row["role"] == "train"]
    trained = sum(row["trained"]["arand"] for row in training) / len(training)
    untrained = sum(row["untrained"]["arand"] for row in training) / len(training)
    assert trained < untrained - 0.1, (trained, untrained)
    assert (tmp_path / "model" / "checkpoint.pt").exists()
    assert (tmp_path / "model" / "config.yaml").exists()
