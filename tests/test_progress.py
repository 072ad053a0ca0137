import io
import logging
import re

import pytest

import blobs
from neuropil.errors import NeuropilError
from neuropil.model import ModelConfig
from neuropil.progress import INTERVAL_VARIABLE, log_interval, progress
from neuropil.train import TrainConfig, Trainer

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


class Clock:
    """Monotonic seconds that move only when told."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def progress_lines(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "neuropil.progress"]


def test_lines_come_every_interval_and_once_at_the_end(caplog):
    caplog.set_level(logging.INFO)
    clock = Clock()
    with progress(total=40, desc="job", unit="step", stream=io.StringIO(), interval=10, clock=clock) as bar:
        for _ in range(40):
            clock.now += 1
            bar.update()
        clock.now += 2
    lines = progress_lines(caplog)
    assert len(lines) == 5  # at 10, 20, 30 and 40 s, then the end
    assert re.fullmatch(STAMP + r" job: 10/40 step \(25%\), elapsed 0:00:10, 1\.00 step/s, ETA 0:00:30", lines[0])
    assert lines[2].endswith("job: 30/40 step (75%), elapsed 0:00:30, 1.00 step/s, ETA 0:00:10")
    assert lines[4].endswith("job: 40/40 step (100%), done in 0:00:42, 1.05 s/step")


def test_a_resumed_count_shows_the_rate_of_this_run_and_the_postfix(caplog):
    caplog.set_level(logging.INFO)
    clock = Clock()
    bar = progress(total=400, initial=100, desc="training", stream=io.StringIO(), interval=60, clock=clock)
    for step in range(30):
        clock.now += 4  # 0.25 it/s
        bar.set_postfix(loss=f"{1 / (step + 1):.4f}", refresh=False)
        bar.update()
    bar.close()
    bar.close()  # a second close writes nothing more
    first, at_two_minutes, last = progress_lines(caplog)
    assert at_two_minutes.endswith("training: 130/400 it (32%), elapsed 0:02:00, 4.00 s/it, ETA 0:18:00, loss=0.0333")
    assert first.endswith("training: 115/400 it (29%), elapsed 0:01:00, 4.00 s/it, ETA 0:19:00, loss=0.0667")
    assert last.endswith("training: 130/400 it (32%), stopped after 0:02:00, 4.00 s/it, loss=0.0333")


def test_nothing_is_logged_when_disabled_or_when_nothing_was_done(caplog):
    caplog.set_level(logging.INFO)
    with progress(total=5, disable=True, stream=io.StringIO(), interval=0) as bar:
        bar.update(5)
    with progress(total=5, initial=5, stream=io.StringIO(), interval=0):
        pass
    assert progress_lines(caplog) == []


def test_byte_counts_are_scaled_and_an_unknown_total_has_no_eta(caplog):
    caplog.set_level(logging.INFO)
    clock = Clock()
    with progress(total=45_600_000, unit="B", unit_scale=True, desc="a.zip", stream=io.StringIO(), clock=clock) as bar:
        clock.now += 2
        bar.update(12_300_000)
    with progress(desc="reading", unit="file", stream=io.StringIO(), interval=0, clock=clock) as bar:
        clock.now += 2
        bar.update(3)
    scaled, unknown, end = progress_lines(caplog)
    assert scaled.endswith("a.zip: 12.3MB/45.6MB (27%), stopped after 0:00:02, 6.15MB/s")
    assert unknown.endswith("reading: 3 file, elapsed 0:00:02, 1.50 file/s, ETA ?")
    assert end.endswith("reading: 3 file, done in 0:00:02, 1.50 file/s")


def test_a_redirected_stream_gets_plain_lines_and_a_terminal_a_bar():
    def shown(stream) -> str:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        log = logging.getLogger("neuropil.progress")
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        try:
            with progress(total=50, desc="blocks", unit="block", stream=stream, interval=0) as bar:
                for _ in range(50):
                    bar.update()
                    bar.set_postfix(loss=0.5)
        finally:
            log.removeHandler(handler)
            log.setLevel(logging.NOTSET)
        return stream.getvalue()

    redirected = shown(io.StringIO())
    assert "\r" not in redirected and "\x1b" not in redirected and "█" not in redirected
    lines = redirected.splitlines()
    assert len(lines) == 51 and all(line.startswith("INFO neuropil.progress: ") for line in lines)
    assert "blocks: 50/50 block (100%), done in " in lines[-1] and lines[-1].endswith(", loss=0.5")
    terminal = shown(Terminal())
    assert "\r" in terminal and "50/50" in terminal and "INFO" not in terminal


def test_the_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(INTERVAL_VARIABLE, raising=False)
    assert log_interval() == 10.0
    monkeypatch.setenv(INTERVAL_VARIABLE, "2.5")
    assert log_interval() == 2.5
    for bad in ("soon", "-1", "nan", "inf"):
        monkeypatch.setenv(INTERVAL_VARIABLE, bad)
        with pytest.raises(NeuropilError, match=INTERVAL_VARIABLE):
            log_interval()


def test_training_logs_a_line_with_the_loss_of_each_logged_iteration(tmp_path, caplog, monkeypatch):
    monkeypatch.setenv(INTERVAL_VARIABLE, "0")
    caplog.set_level(logging.INFO)
    model_config = ModelConfig(base_channels=4, depth=3, voxel_size=blobs.VOXEL)
    train_config = TrainConfig(iterations=3, patch_shape=(8, 16, 16), checkpoint_every=10, augment=False)
    volumes = {"blobs": [blobs.blob_volume(0, shape=(16, 48, 48), cells=12)]}
    Trainer(volumes, out_dir=tmp_path, model_config=model_config, train_config=train_config).train()
    lines = progress_lines(caplog)
    logged = [row.split(",")[1] for row in (tmp_path / "log.csv").read_text().splitlines()[1:]]
    assert len(lines) == 4 and len(logged) == 3  # one per iteration, then the end
    assert re.match(STAMP + " training: 3/3 it \\(100%\\), done in ", lines[3])
    for iteration, (line, loss) in enumerate(zip(lines, logged), start=1):
        assert re.match(STAMP + f" training: {iteration}/3 it ", line)
        assert float(line.rsplit("loss=", 1)[1]) == pytest.approx(float(loss), abs=1e-4)
