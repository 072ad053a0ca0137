"""Training: masked binary cross-entropy on affinities, Adam, multi-domain batches.

A run lives in one folder: ``config.yaml`` (how it was made), ``checkpoint.pt`` (the
latest state, written atomically), ``log.csv`` (per iteration: training loss, learning
rate, UTC time at its end and samples per second of its step) and, when
validation volumes are given, ``validation.csv`` and ``best.pt``.

Validation is by segmentation: at every checkpoint each validation volume is predicted,
segmented through :func:`neuropil.segment.segment` (watershed fragments, mean-affinity
agglomeration) at every threshold of ``TrainConfig.thresholds`` and scored with
:func:`neuropil.evaluate.evaluate`. The threshold with the lowest mean VOI over all
validation volumes is the checkpoint's calibrated ``merge_threshold`` (which
``neuropil predict`` writes on the affinities and ``neuropil segment`` uses);
``validation.csv`` holds, per checkpoint and domain, the loss and the VOI split, VOI
merge and ARAND at that threshold. ``best.pt`` is the checkpoint of lowest mean VOI.

Starting again in the same folder resumes from the checkpoint; an interrupted run saves
before it stops. Batch ``i`` is a function of the run's seed and ``i`` only
(:mod:`neuropil.train.batches`), whether made here or in ``workers`` processes, and the
checkpoint holds torch's random state, so a run killed between checkpoints and resumed
ends with the same weights, bit for bit, as one never stopped; the rows of ``log.csv``
and ``validation.csv`` after the checkpoint are dropped and written again.
"""

from __future__ import annotations

import datetime
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Literal, NamedTuple, TextIO

import numpy as np
import torch
import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PositiveInt, ValidationError, field_validator

from neuropil.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from neuropil.data.volumes import TrainingVolume
from neuropil.errors import NeuropilError
from neuropil.evaluate import THRESHOLD_GRID, Scores, best_threshold, evaluate, section_ids
from neuropil.files import write_text_atomic
from neuropil.model import ModelConfig, UNet3D, device_field
from neuropil.predict import predict_affinities
from neuropil.progress import progress as progress_bar
from neuropil.progress import timestamp
from neuropil.segment import segment
from neuropil.train.augment import AugmentConfig, augment_config
from neuropil.train.batches import Batch, BatchMaker, batches
from neuropil.train.loss import affinity_loss, masked_bce_loss

logger = logging.getLogger(__name__)

BEST = "best.pt"
"""The checkpoint of lowest mean validation VOI, beside :data:`neuropil.checkpoint.CHECKPOINT`."""
LOG_COLUMNS = ("iteration", "loss", "learning_rate", "time", "samples_per_second")
"""Columns of ``log.csv``: ``time`` is UTC (ISO 8601) at the end of the iteration; samples/s of its step."""
VALIDATION_COLUMNS = ("iteration", "domain", "loss", "threshold", "voi_split", "voi_merge", "arand")
"""Columns of ``validation.csv``; the scores are at the checkpoint's calibrated threshold."""


class TrainConfig(BaseModel):
    """Optimisation settings; saved next to every checkpoint.

    Every number is finite; counts and shapes are positive (``warmup_iterations`` and
    ``workers`` may be 0) and ``device`` is one this machine has.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    iterations: int = Field(default=2000, ge=1)
    """Training steps of the whole run (a resumed run continues up to this many)."""
    patch_shape: tuple[PositiveInt, PositiveInt, PositiveInt] = (16, 64, 64)
    batch_size: int = Field(default=2, ge=1)
    """>= 2 reaches oneDNN's fast 3-D convolution on CPUs."""
    learning_rate: float = Field(default=5e-4, gt=0)
    learning_rate_schedule: Literal["constant", "cosine"] = "cosine"
    """``cosine`` decays the rate to ``final_learning_rate_fraction`` of it at the last iteration."""
    final_learning_rate_fraction: float = Field(default=0.1, ge=0, le=1)
    warmup_iterations: int = Field(default=0, ge=0)
    """The rate grows linearly over this many first iterations to the schedule's (0: no warm-up)."""
    max_minutes: float | None = Field(default=None, gt=0)
    """Training time budget over the whole run (resumes included): save and stop once exceeded."""
    balance_classes: bool = True
    """Weight boundary (0) and same-object (1) affinities equally within each batch."""
    augment: AugmentConfig = AugmentConfig()
    """Augmentation probabilities and ranges (:class:`~neuropil.train.augment.AugmentConfig`);
    ``true`` is its defaults, ``false`` none."""
    weights: dict[str, Annotated[float, Field(ge=0)]] | None = None
    """Domain sampling weights; uniform when not given (the method's choice)."""
    seed: int = 0
    """Initial weights and every batch (batch ``i`` draws from ``(seed, i)``)."""
    initial_weights: str | None = None
    """Fine-tuning: start from the weights of this checkpoint or shipped model (``neuropil models``)
    instead of random ones. The run's model must be the same network (its ``model`` section,
    which a run configuration fills in from the checkpoint when it gives none). A resumed run
    continues from its own checkpoint."""
    workers: int = Field(default=0, ge=0)
    """Processes that sample and augment batches ahead of the training step (0: the training
    process itself). Batches are the same for any number, so are the weights."""
    checkpoint_every: int = Field(default=100, ge=1)
    """Save (and validate) every this many iterations, and at the end."""
    tensorboard: bool = False
    """Also write loss, learning rate, samples/s and validation scores for TensorBoard to
    ``tensorboard/`` in the run's folder (needs the ``tensorboard`` extra)."""
    device: Annotated[str, AfterValidator(device_field)] = "cpu"
    """Torch device of training and validation (:func:`neuropil.model.check_device`: one this machine has)."""
    validation: bool = True
    """Score the validation volumes at every checkpoint (``validation.csv``)."""
    validation_shape: tuple[PositiveInt, PositiveInt, PositiveInt] | None = (32, 128, 128)
    """(z, y, x) at most of each validation volume scored (its centre); None: all of it."""
    thresholds: tuple[float, ...] = THRESHOLD_GRID
    """Merge thresholds of the validation's mean-affinity agglomeration; the best is the calibrated one."""

    @field_validator("augment", mode="before")
    @classmethod
    def _augment_switch(cls, value):
        return augment_config(value)

    @field_validator("thresholds")
    @classmethod
    def _threshold_grid(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or not all(0.0 <= t <= 1.0 for t in value):  # NaN fails too
            raise ValueError("needs at least one merge threshold, each in [0, 1]")
        return value


def initial_model(checkpoint: str, model_config: ModelConfig) -> UNet3D:
    """The model of ``checkpoint`` (a path or a shipped model's name) to fine-tune; it must be ``model_config``'s.

    Raises
    ------
    NeuropilError
        An unreadable checkpoint, or one of another network (naming the fields that differ).
    """
    from neuropil.checkpoint import load_model, resolve_checkpoint

    model = load_model(resolve_checkpoint(checkpoint))
    theirs, ours = model.config.model_dump(), model_config.model_dump()
    differ = [f"{key} {theirs[key]!r} (the run: {ours[key]!r})" for key in ours if theirs.get(key) != ours[key]]
    if differ:
        raise NeuropilError(
            f"train.initial_weights {checkpoint}: another network: " + "; ".join(differ) + " (leave 'model' out "
            "of the configuration to take the checkpoint's)"
        )
    return model


def config_error(error: ValidationError, where: str) -> NeuropilError:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"])
    return NeuropilError(f"{where}: bad value for '{key}': {first['msg']}")


def centre_crop(volume: TrainingVolume, shape: Sequence[int] | None) -> TrainingVolume:
    """The centre of ``volume``, at most ``shape`` (z, y, x) voxels (a view; the volume itself if it fits)."""
    if shape is None or all(s <= c for s, c in zip(volume.raw.shape, shape)):
        return volume
    region = tuple(
        slice((s - min(s, c)) // 2, (s - min(s, c)) // 2 + min(s, c)) for s, c in zip(volume.raw.shape, shape)
    )
    return volume.crop(region, part="centre", crop=[(r.start, r.stop) for r in region])


class VolumeValidation(NamedTuple):
    """How a model does on one validation volume."""

    loss: float
    """Masked binary cross-entropy of its affinities (nats per affinity, :func:`affinity_loss`)."""
    scores: list[Scores]
    """Segmentation scores at each merge threshold, in the order given."""


def validate_volume(
    model: UNet3D, volume: TrainingVolume, *, thresholds: Sequence[float], balance: bool = True, device: str = "cpu"
) -> VolumeValidation:
    """Predict ``volume``, segment it at every threshold and score it against its labels.

    Parameters
    ----------
    model : UNet3D
        Predicted in exact tiles (:func:`neuropil.predict.predict_affinities`), in eval mode.
    volume : TrainingVolume
        At the model's voxel size; its ``known`` mask, when given, limits the scored voxels.
        With labels in sections only (``in_plane_only``), objects are scored within each
        section (:func:`neuropil.evaluate.section_ids`): their labels say nothing across sections.
    thresholds : sequence of float
        Merge thresholds of :func:`neuropil.segment.segment` (``method="mean"``).
    balance : bool
        Class-balance the loss as in training.

    Returns
    -------
    VolumeValidation
    """
    affinities = predict_affinities(volume.raw, model, progress=False, device=device)
    loss = affinity_loss(affinities, volume, model.config.offsets, balance=balance)
    segmented = segment(affinities, voxel_size=volume.voxel_size, thresholds=thresholds, method="mean")
    if volume.in_plane_only:
        labels = section_ids(volume.labels)
        scores = [evaluate(section_ids(s), labels, mask=volume.known) for s in segmented.segmentations]
    else:
        scores = [evaluate(s, volume.labels, mask=volume.known) for s in segmented.segmentations]
    return VolumeValidation(loss, scores)


class Validation(NamedTuple):
    """The validation of one checkpoint."""

    losses: dict[str, float]
    """Mean loss per validation domain."""
    scores: dict[str, list[list[Scores]]]
    """Per domain, per volume, the scores at each threshold."""
    threshold: float
    """The calibrated merge threshold: lowest mean VOI over all validation volumes."""
    voi: float
    """That mean VOI (bits, split + merge)."""

    def rows(self, iteration: int, thresholds: Sequence[float]) -> list[str]:
        """The ``validation.csv`` lines (:data:`VALIDATION_COLUMNS`): per domain, means at the threshold."""
        index = list(thresholds).index(self.threshold)
        lines = []
        for name, per_volume in self.scores.items():
            chosen = [scores[index] for scores in per_volume]
            split, merge, arand = (
                float(np.mean([getattr(s, f) for s in chosen])) for f in ("voi_split", "voi_merge", "arand")
            )
            lines.append(
                f"{iteration},{name},{self.losses[name]:.5f},{self.threshold:g},{split:.5f},{merge:.5f},{arand:.5f}\n"
            )
        return lines


def kept_rows(path: Path, header: str, iteration: int) -> str:
    """``header`` and the complete rows of the CSV at ``path`` whose first field is at most ``iteration``.

    A run that stopped between checkpoints (a crash, not an interrupt) wrote rows of
    iterations the checkpoint does not hold; they are done again, so their rows are
    dropped rather than repeated (with a second header when no checkpoint was reached).
    Rows of a file with fewer columns (an older version's) are padded with empty fields.
    """
    columns = header.count(",") + 1
    rows = [header + "\n"]
    if path.exists():
        for line in path.read_text().splitlines(keepends=True)[1:]:
            first = line.split(",", 1)[0]
            if line.endswith("\n") and first.isdigit() and int(first) <= iteration:
                rows.append(line[:-1] + "," * max(columns - 1 - line.count(","), 0) + "\n")
    return "".join(rows)


class Trainer:
    """Trains one :class:`UNet3D` on patches from several domains, resumable from ``out_dir``.

    Parameters
    ----------
    domains : mapping of domain name to training volumes
    out_dir : folder of the run
    model_config, train_config
    validation : mapping of domain name to volumes, optional
        Segmented and scored at every checkpoint (:func:`validate_volume`, ``validation.csv``);
        they calibrate the checkpoint's merge threshold and choose ``best.pt``.
    run_config : mapping, optional
        The whole run's configuration (e.g. :class:`neuropil.config.RunConfig` dumped),
        saved as ``config.yaml`` and in the checkpoint instead of ``model`` and ``train`` only.
    """

    def __init__(
        self,
        domains: Mapping[str, Sequence[TrainingVolume]],
        *,
        out_dir: str | os.PathLike,
        model_config: ModelConfig,
        train_config: TrainConfig,
        validation: Mapping[str, Sequence[TrainingVolume]] | None = None,
        run_config: Mapping | None = None,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.model_config = model_config
        self.config = train_config
        self.validation = {
            name: [centre_crop(volume, train_config.validation_shape) for volume in volumes]
            for name, volumes in (validation or {}).items()
            if volumes and train_config.validation
        }
        self.run_config = dict(run_config) if run_config is not None else None
        self.batch_maker = BatchMaker(
            domains,
            patch_shape=train_config.patch_shape,
            batch_size=train_config.batch_size,
            offsets=model_config.offsets,
            augment_config=train_config.augment,
            weights=train_config.weights,
            seed=train_config.seed,
        )
        self.sampler = self.batch_maker.sampler
        # The initial weights follow the seed without reseeding the caller's global generator.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(train_config.seed)
            model = UNet3D(model_config)
        resuming = (Path(out_dir) / CHECKPOINT).exists()
        if train_config.initial_weights is not None and not resuming:  # a resumed run has its own weights
            model.load_state_dict(initial_model(train_config.initial_weights, model_config).state_dict())
        divisor = model.divisor
        if any(p % d for p, d in zip(train_config.patch_shape, divisor)):
            raise NeuropilError(
                f"patch_shape {train_config.patch_shape} must be a multiple of {divisor} for this model"
            )
        voxel_sizes = {
            tuple(v.voxel_size) for group in (domains, self.validation) for volumes in group.values() for v in volumes
        }
        if voxel_sizes != {tuple(float(v) for v in model_config.voxel_size)}:
            raise NeuropilError(
                f"training volumes have voxel sizes {sorted(voxel_sizes)} but the model is for "
                f"{model_config.voxel_size}; resample them first"
            )
        self.device = torch.device(train_config.device)
        # Module.to accepts memory_format (documented), but torch's stubs list no overload with it.
        self.model: UNet3D = model.to(self.device).to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=train_config.learning_rate)
        self.iteration = 0
        self.merge_threshold: float | None = None
        """The calibrated merge threshold of the last validation (None without validation volumes)."""
        self.best_voi = math.inf
        """The lowest mean validation VOI of the run's checkpoints so far (that of ``best.pt``)."""
        self.training_seconds = 0.0
        """Wall time spent in :meth:`train` so far, over the whole run (``max_minutes`` counts it)."""
        self._board = None
        """TensorBoard's writer while :meth:`train` runs with ``tensorboard: true``."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if resuming:
            self._resume()
        self._write_config()

    def _write_config(self) -> None:
        described = self.run_config or {
            "model": self.model_config.model_dump(mode="json"),
            "train": self.config.model_dump(mode="json"),
        }
        text = yaml.safe_dump(described, sort_keys=False)
        write_text_atomic(self.out_dir / "config.yaml", text)

    def _resume(self) -> None:
        state = load_checkpoint(self.out_dir / CHECKPOINT)
        if state["model_config"] != self.model_config.model_dump(mode="json"):
            raise NeuropilError(f"{self.out_dir / CHECKPOINT}: holds a different model; use another output folder")
        self.model.load_state_dict(state["model_state"])
        self.optimizer.load_state_dict(state["optimizer_state"])
        self.iteration = int(state["iteration"])
        threshold = state.get("merge_threshold")
        self.merge_threshold = None if threshold is None else float(threshold)
        self.best_voi = float(state.get("best_voi", math.inf))
        self.training_seconds = float(state.get("training_seconds", 0.0))
        # Batches need no state (a function of the iteration); older checkpoints' numpy states are unused.
        states = state.get("random_states")
        if states is not None:
            torch.set_rng_state(states["torch"])
            if "cuda" in states and self.device.type == "cuda":
                torch.cuda.set_rng_state(states["cuda"], self.device)
        logger.info("resuming from iteration %d", self.iteration)

    def random_states(self) -> dict:
        """Torch's generator states (CPU, and CUDA's on a GPU); batches need none (:mod:`neuropil.train.batches`)."""
        states = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            states["cuda"] = torch.cuda.get_rng_state(self.device)
        return states

    def state(self) -> dict:
        """What a checkpoint holds: configurations, weights, optimizer, iteration and calibration."""
        return {
            "model_config": self.model_config.model_dump(mode="json"),
            "train_config": self.config.model_dump(mode="json"),
            "model_state": self.model.state_dict(),
            "optimizer_state": self.optimizer.state_dict(),
            "iteration": self.iteration,
            "merge_threshold": self.merge_threshold,
            "best_voi": self.best_voi,
            "training_seconds": self.training_seconds,
            "random_states": self.random_states(),
            **({"run_config": self.run_config} if self.run_config is not None else {}),
        }

    def save(self) -> Path:
        path = self.out_dir / CHECKPOINT
        save_checkpoint(path, self.state())
        return path

    def validate(self) -> Validation | None:
        """Segment and score every validation volume; append to ``validation.csv`` (None without volumes)."""
        if not self.validation:
            return None
        thresholds = self.config.thresholds
        losses, scores = {}, {}
        for name, volumes in self.validation.items():
            results = [
                validate_volume(
                    self.model,
                    volume,
                    thresholds=thresholds,
                    balance=self.config.balance_classes,
                    device=self.config.device,
                )
                for volume in volumes
            ]
            losses[name] = float(np.mean([result.loss for result in results]))
            scores[name] = [result.scores for result in results]
        every_volume = [per_volume for per_domain in scores.values() for per_volume in per_domain]
        threshold = best_threshold(every_volume, thresholds)
        index = list(thresholds).index(threshold)
        voi = float(np.mean([per_volume[index].voi for per_volume in every_volume]))
        validation = Validation(losses, scores, threshold, voi)
        if self._board is not None:
            self._board.add_scalar("validation/threshold", threshold, self.iteration)
            self._board.add_scalar("validation/voi", voi, self.iteration)
            for name, per_volume in scores.items():
                self._board.add_scalar(f"validation/{name}/loss", losses[name], self.iteration)
                for field in ("voi_split", "voi_merge", "arand"):
                    value = float(np.mean([getattr(volume[index], field) for volume in per_volume]))
                    self._board.add_scalar(f"validation/{name}/{field}", value, self.iteration)
        path = self.out_dir / "validation.csv"
        if not path.exists():
            path.write_text(",".join(VALIDATION_COLUMNS) + "\n")
        with path.open("a") as log:
            log.writelines(validation.rows(self.iteration, thresholds))
        logger.info(
            "%s iteration %d validation: loss %s; VOI %.3f at threshold %g",
            timestamp(),
            self.iteration,
            ", ".join(f"{n} {v:.4f}" for n, v in losses.items()),
            voi,
            threshold,
        )
        return validation

    def checkpoint(self) -> Path:
        """Score the validation volumes, then save with the calibrated threshold; keep the best as ``best.pt``.

        ``best.pt`` is written before ``checkpoint.pt``, so a run stopped between the two
        writes it again when it resumes.
        """
        validation = self.validate()
        if validation is not None:
            self.merge_threshold = validation.threshold
            if validation.voi < self.best_voi:
                self.best_voi = validation.voi
                save_checkpoint(self.out_dir / BEST, self.state())
        return self.save()

    def batch(self, index: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Batch ``index`` (default: the next iteration's) as tensors on the training device."""
        return self._tensors(self.batch_maker(self.iteration if index is None else index))

    def _tensors(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        def tensor(array) -> torch.Tensor:
            return torch.as_tensor(array).to(self.device).contiguous(memory_format=torch.channels_last_3d)

        return tensor(batch.raw), tensor(batch.target), tensor(batch.mask)

    def learning_rate(self) -> float:
        """The rate for the current iteration; a function of the iteration only, so resuming keeps it.

        The schedule's rate, times ``(iteration + 1) / warmup_iterations`` during the warm-up.
        """
        rate = self.config.learning_rate
        if self.config.warmup_iterations and self.iteration < self.config.warmup_iterations:
            rate *= (self.iteration + 1) / self.config.warmup_iterations
        if self.config.learning_rate_schedule == "constant":
            return rate
        progress = min(self.iteration / max(self.config.iterations, 1), 1.0)
        floor = self.config.final_learning_rate_fraction
        return rate * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))

    def step(self, batch: Batch | None = None) -> float:
        """One optimisation step on ``batch`` (default: the current iteration's, made here)."""
        self.model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate()
        raw, target, mask = self.batch() if batch is None else self._tensors(batch)
        self.optimizer.zero_grad(set_to_none=True)
        logits = self.model(raw)
        loss = masked_bce_loss(logits, target, mask, balance=self.config.balance_classes)
        if not torch.isfinite(loss):
            raise NeuropilError(
                f"training loss became {loss.item()} at iteration {self.iteration}; lower the learning rate"
            )
        loss.backward()
        self.optimizer.step()
        self.iteration += 1
        return float(loss.item())

    def _open_log(self) -> TextIO:
        """``log.csv`` for appending, holding the rows up to the current iteration only (:func:`kept_rows`).

        ``validation.csv``, when there is one, is cut back to the current iteration too.
        """
        validation = self.out_dir / "validation.csv"
        if validation.exists():
            write_text_atomic(validation, kept_rows(validation, ",".join(VALIDATION_COLUMNS), self.iteration))
        path = self.out_dir / "log.csv"
        write_text_atomic(path, kept_rows(path, ",".join(LOG_COLUMNS), self.iteration))
        return path.open("a", buffering=1)

    def train(self, *, progress: bool = True) -> UNet3D:
        """Run until ``iterations`` or the ``max_minutes`` budget; saves every ``checkpoint_every``, at the end
        and when interrupted."""
        log = self._open_log()
        self._board = self._open_board()
        bar = progress_bar(
            total=self.config.iterations, initial=self.iteration, desc="training", disable=not progress, unit="it"
        )
        budget = math.inf if self.config.max_minutes is None else 60.0 * self.config.max_minutes
        source = batches(self.batch_maker, self.iteration, self.config.iterations, workers=self.config.workers)
        try:
            while self.iteration < self.config.iterations and self.training_seconds < budget:
                start = time.monotonic()
                rate = self.learning_rate()
                loss = self.step(next(source))
                seconds = time.monotonic() - start
                self.training_seconds += seconds
                now = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
                speed = self.config.batch_size / max(seconds, 1e-9)
                log.write(f"{self.iteration},{loss:.5f},{rate:.6g},{now},{speed:.3f}\n")
                if self._board is not None:
                    for tag, value in (("loss", loss), ("learning_rate", rate), ("samples_per_second", speed)):
                        self._board.add_scalar(f"train/{tag}", value, self.iteration)
                bar.set_postfix(loss=f"{loss:.4f}", refresh=False)  # before the update: its line shows this loss
                bar.update(1)
                if self.iteration % self.config.checkpoint_every == 0:
                    self.checkpoint()
                    self.training_seconds += time.monotonic() - start - seconds
            if self.iteration < self.config.iterations:
                logger.warning(
                    "time budget of %g minutes spent at iteration %d; checkpoint saved, raise train.max_minutes "
                    "and run again to continue",
                    self.config.max_minutes,
                    self.iteration,
                )
        except KeyboardInterrupt:
            self.save()
            logger.warning("interrupted at iteration %d; checkpoint saved, run again to resume", self.iteration)
            raise
        finally:
            source.close()
            bar.close()
            log.close()
            if self._board is not None:
                self._board.flush()
        try:
            if self.iteration % self.config.checkpoint_every != 0:
                self.checkpoint()
        finally:
            if self._board is not None:
                self._board.close()
                self._board = None
        return self.model.eval()

    def _open_board(self):
        """TensorBoard's writer in ``tensorboard/``, dropping events after the current iteration (a resume)."""
        if not self.config.tensorboard:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:
            raise NeuropilError(
                "train.tensorboard needs the tensorboard package: pip install 'neuropil[tensorboard]'"
            ) from error
        return SummaryWriter(str(self.out_dir / "tensorboard"), purge_step=self.iteration + 1)


def train(
    domains: Mapping[str, Sequence[TrainingVolume]],
    *,
    out_dir: str | os.PathLike,
    model_config: ModelConfig | None = None,
    train_config: TrainConfig | None = None,
    progress: bool = True,
) -> UNet3D:
    """Train a U-Net on ``domains`` (name -> volumes), resuming from ``out_dir`` if it holds a checkpoint."""
    trainer = Trainer(
        domains,
        out_dir=out_dir,
        model_config=model_config or ModelConfig(),
        train_config=train_config or TrainConfig(),
    )
    return trainer.train(progress=progress)
