"""Training: masked binary cross-entropy on affinities, Adam, multi-domain batches.

A run lives in one folder: ``config.yaml`` (how it was made), ``checkpoint.pt`` (the
latest state, written atomically), ``log.csv`` (training loss per iteration) and, when
validation volumes are given, ``validation.csv`` (their loss at every checkpoint).
Starting again in the same folder resumes from the checkpoint; an interrupted run saves
before it stops.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal, TextIO

import numpy as np
import torch
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError
from tqdm.auto import tqdm

from neuropil.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from neuropil.data.sampling import MultiDomainSampler
from neuropil.data.volumes import TrainingVolume
from neuropil.errors import NeuropilError
from neuropil.files import write_text_atomic
from neuropil.model import ModelConfig, UNet3D
from neuropil.train.augment import augment
from neuropil.train.loss import masked_bce_loss, validation_loss

logger = logging.getLogger(__name__)


class TrainConfig(BaseModel):
    """Optimisation settings; saved next to every checkpoint."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    iterations: int = 2000
    patch_shape: tuple[int, int, int] = (16, 64, 64)
    batch_size: int = 2
    """>= 2 reaches oneDNN's fast 3-D convolution on CPUs."""
    learning_rate: float = 5e-4
    learning_rate_schedule: Literal["constant", "cosine"] = "cosine"
    """``cosine`` decays the rate to ``final_learning_rate_fraction`` of it at the last iteration."""
    final_learning_rate_fraction: float = 0.1
    balance_classes: bool = True
    """Weight boundary (0) and same-object (1) affinities equally within each batch."""
    augment: bool = True
    weights: dict[str, float] | None = None
    """Domain sampling weights; uniform when not given (the method's choice)."""
    seed: int = 0
    checkpoint_every: int = 100
    device: str = "cpu"
    validation: bool = True
    """Score the validation volumes at every checkpoint (``validation.csv``)."""
    validation_shape: tuple[int, int, int] | None = (32, 128, 128)
    """(z, y, x) at most of each validation volume scored (its centre); None: all of it."""


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


class Trainer:
    """Trains one :class:`UNet3D` on patches from several domains, resumable from ``out_dir``.

    Parameters
    ----------
    domains : mapping of domain name to training volumes
    out_dir : folder of the run
    model_config, train_config
    validation : mapping of domain name to volumes, optional
        Scored with :func:`validation_loss` at every checkpoint (``validation.csv``).
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
        self.sampler = MultiDomainSampler(
            domains, patch_shape=train_config.patch_shape, weights=train_config.weights, seed=train_config.seed
        )
        # The initial weights follow the seed without reseeding the caller's global generator.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(train_config.seed)
            model = UNet3D(model_config)
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
        _, y, x = model_config.voxel_size
        self.transpose_xy = y == x
        self.device = torch.device(train_config.device)
        # Module.to accepts memory_format (documented), but torch's stubs list no overload with it.
        self.model: UNet3D = model.to(self.device).to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=train_config.learning_rate)
        self.iteration = 0
        self.rng = np.random.default_rng(train_config.seed + 1)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if (self.out_dir / CHECKPOINT).exists():
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
        self.sampler.rng = np.random.default_rng(self.config.seed + 7919 * self.iteration)
        self.rng = np.random.default_rng(self.config.seed + 1 + 7919 * self.iteration)
        logger.info("resuming from iteration %d", self.iteration)

    def save(self) -> Path:
        path = self.out_dir / CHECKPOINT
        save_checkpoint(
            path,
            {
                "model_config": self.model_config.model_dump(mode="json"),
                "train_config": self.config.model_dump(mode="json"),
                "model_state": self.model.state_dict(),
                "optimizer_state": self.optimizer.state_dict(),
                "iteration": self.iteration,
                **({"run_config": self.run_config} if self.run_config is not None else {}),
            },
        )
        return path

    def validate(self) -> dict[str, float]:
        """Mean :func:`validation_loss` per validation domain (empty without validation volumes)."""
        losses = {
            name: float(
                np.mean(
                    [
                        validation_loss(
                            self.model, volume, balance=self.config.balance_classes, device=self.config.device
                        )
                        for volume in volumes
                    ]
                )
            )
            for name, volumes in self.validation.items()
        }
        if losses:
            path = self.out_dir / "validation.csv"
            new = not path.exists()
            with path.open("a") as log:
                if new:
                    log.write("iteration,domain,loss\n")
                for name, loss in losses.items():
                    log.write(f"{self.iteration},{name},{loss:.5f}\n")
            logger.info(
                "iteration %d validation loss: %s", self.iteration, ", ".join(f"{n} {v:.4f}" for n, v in losses.items())
            )
        return losses

    def checkpoint(self) -> Path:
        """Save, then score the validation volumes."""
        path = self.save()
        self.validate()
        return path

    def batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raws, targets, masks = [], [], []
        for _ in range(self.config.batch_size):
            patch = self.sampler.sample()
            volume = self.sampler.domains[patch.domain][patch.volume]
            if self.config.augment:
                patch = augment(patch, rng=self.rng, transpose_xy=self.transpose_xy)
            target = volume.targets(self.model_config.offsets, labels=patch.labels, known=patch.known)
            raws.append(patch.raw[None])
            targets.append(target.affinities)
            masks.append(target.mask)

        def tensor(arrays):
            return torch.from_numpy(np.stack(arrays)).to(self.device).contiguous(memory_format=torch.channels_last_3d)

        return tensor(raws), tensor(targets), tensor(masks)

    def learning_rate(self) -> float:
        """The rate for the current iteration; a function of the iteration only, so resuming keeps it."""
        rate = self.config.learning_rate
        if self.config.learning_rate_schedule == "constant":
            return rate
        progress = min(self.iteration / max(self.config.iterations, 1), 1.0)
        floor = self.config.final_learning_rate_fraction
        return rate * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))

    def step(self) -> float:
        self.model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate()
        raw, target, mask = self.batch()
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
        """``log.csv`` for appending, holding the rows up to the current iteration only.

        A run that stopped between checkpoints (a crash, not an interrupt) logged iterations
        the checkpoint does not hold; they are done again, so their rows are dropped rather
        than repeated (with a second header when no checkpoint was reached).
        """
        path = self.out_dir / "log.csv"
        rows = ["iteration,loss\n"]
        if path.exists():
            for line in path.read_text().splitlines(keepends=True)[1:]:
                iteration = line.split(",", 1)[0]
                if line.endswith("\n") and iteration.isdigit() and int(iteration) <= self.iteration:
                    rows.append(line)
        write_text_atomic(path, "".join(rows))
        return path.open("a", buffering=1)

    def train(self, *, progress: bool = True) -> UNet3D:
        """Run until ``iterations``; saves every ``checkpoint_every`` and when interrupted."""
        log = self._open_log()
        bar = tqdm(
            total=self.config.iterations, initial=self.iteration, desc="training", disable=not progress, unit="it"
        )
        try:
            while self.iteration < self.config.iterations:
                loss = self.step()
                log.write(f"{self.iteration},{loss:.5f}\n")
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}")
                if self.iteration % self.config.checkpoint_every == 0:
                    self.checkpoint()
        except KeyboardInterrupt:
            self.save()
            logger.warning("interrupted at iteration %d; checkpoint saved, run again to resume", self.iteration)
            raise
        finally:
            bar.close()
            log.close()
        if self.iteration % self.config.checkpoint_every != 0:
            self.checkpoint()
        return self.model.eval()


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
