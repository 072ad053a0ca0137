"""3-D U-Net that predicts affinities.

Ronneberger, O. et al. (2015) U-Net. doi:10.1007/978-3-319-24574-4_28;
Cicek, O. et al. (2016) 3D U-Net. doi:10.1007/978-3-319-46723-8_49.
Padding keeps input and output the same shape, so tiles and whole volumes share one
code path; :func:`neuropil.predict.predict_affinities` uses :meth:`UNet3D.context` to
read each tile with enough surrounding data that tiles agree with a one-shot pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Literal, Self

import torch
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PositiveInt, model_validator
from torch import nn

from neuropil.conventions import METHOD_VOXEL_SIZE, NEAREST_NEIGHBOURS, check_offsets, positive_voxel_size
from neuropil.errors import NeuropilError


def available_devices() -> list[str]:
    """The torch devices this machine can run on: ``cpu``, each ``cuda:N`` and ``mps`` where present."""
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        devices.append("mps")
    return devices


def check_device(name: str) -> str:
    """``name`` if it is a torch device this machine has, else a one-line error naming what it has.

    Parameters
    ----------
    name : str
        A device string as :class:`torch.device` reads it: ``cpu``, ``cuda`` or ``cuda:N``
        (where CUDA is available and ``N`` is below its device count) or ``mps`` (where
        available).

    Returns
    -------
    str
        ``name``, unchanged.

    Raises
    ------
    NeuropilError
        An unknown device string, or a device this machine does not have.
    """
    available = ", ".join(available_devices())
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise NeuropilError(f"unknown torch device {name!r} (available: {available})") from None
    if device.type == "cpu":
        return name
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise NeuropilError(f"device {name!r}: CUDA is not available here (available: {available})")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise NeuropilError(
                f"device {name!r}: there are {torch.cuda.device_count()} CUDA device(s) (available: {available})"
            )
        return name
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise NeuropilError(f"device {name!r}: MPS is not available here (available: {available})")
        return name
    raise NeuropilError(f"device {name!r}: neuropil runs on cpu, cuda or mps (available: {available})")


def device_field(name: str) -> str:
    """:func:`check_device` as a pydantic validator (its error a ``ValueError``, named by the field)."""
    try:
        return check_device(name)
    except NeuropilError as error:
        raise ValueError(str(error)) from None


def downsample_factors_for(voxel_size: Sequence[float], depth: int) -> list[tuple[int, int, int]]:
    """Pooling factors per level that make anisotropic voxels isotropic first.

    An axis is pooled (by 2) only while its current voxel size is at most 1.5x the
    finest one, so 40x4x4 nm data is pooled in-plane only until x and y catch up with z.
    """
    current = [float(v) for v in voxel_size]
    if len(current) != 3:
        raise NeuropilError(f"voxel_size needs 3 values (z, y, x nm), got {tuple(voxel_size)}")
    factors: list[tuple[int, int, int]] = []
    for _ in range(depth - 1):
        finest = min(current)
        z, y, x = (2 if size <= 1.5 * finest else 1 for size in current)
        level = (z, y, x)
        factors.append(level)
        current = [size * f for size, f in zip(current, level)]
    return factors


class ModelConfig(BaseModel):
    """Architecture of :class:`UNet3D`; saved in every checkpoint. Counts are positive, sizes finite."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    in_channels: int = Field(default=1, ge=1)
    offsets: Annotated[tuple[tuple[int, int, int], ...], AfterValidator(check_offsets)] = NEAREST_NEIGHBOURS
    """One output channel per offset ``(z, y, x)``, pointing backwards: the three nearest
    neighbours first (segmentation reads channels 0-2), then any long-range ones, e.g.
    ``(0, -3, 0), (0, 0, -3), (0, -9, 0), (0, 0, -9), (-2, 0, 0)``
    (:func:`neuropil.conventions.check_offsets`)."""
    base_channels: int = Field(default=12, ge=1)
    channel_factor: int = Field(default=2, ge=1)
    depth: int = Field(default=4, ge=1)
    downsample_factors: tuple[tuple[PositiveInt, PositiveInt, PositiveInt], ...] | None = None
    """Per-level pooling; ``None`` derives them from ``voxel_size``."""
    voxel_size: Annotated[tuple[float, float, float], AfterValidator(positive_voxel_size)] = METHOD_VOXEL_SIZE
    """Voxel size (nm) the model is trained at; inputs are resampled to it."""
    normalization: Literal["none", "batch"] = "batch"
    """``batch``: batch normalization after every convolution. It speeds up training; in
    evaluation mode it is a fixed per-channel scale and shift, so tiles stay exact."""

    @model_validator(mode="after")
    def _factors_fit_depth(self) -> Self:
        # Checked here so a bad config fails when it is read, not when a network is built from it.
        if self.downsample_factors is not None:
            if len(self.downsample_factors) != self.depth - 1:
                raise ValueError(f"downsample_factors needs {self.depth - 1} entries for depth {self.depth}")
        return self

    @property
    def out_channels(self) -> int:
        return len(self.offsets)

    @property
    def factors(self) -> list[tuple[int, int, int]]:
        """Pooling factors ``(z, y, x)`` of each level but the last: the given ones, else derived from ``voxel_size``."""
        if self.downsample_factors is not None:
            return list(self.downsample_factors)
        return downsample_factors_for(self.voxel_size, self.depth)


def _conv_block(in_channels: int, out_channels: int, normalization: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    for first in (in_channels, out_channels):
        layers.append(nn.Conv3d(first, out_channels, kernel_size=3, padding=1, bias=normalization == "none"))
        if normalization == "batch":
            layers.append(nn.BatchNorm3d(out_channels))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class UNet3D(nn.Module):
    """U-Net with ``depth`` levels; returns affinity logits ``(b, c, z, y, x)``.

    The output at a voxel depends only on the input around it, which is what makes
    tiled prediction exact: batch normalization, if used, runs with its fixed running
    statistics in evaluation mode (:meth:`torch.nn.Module.eval`, as prediction runs).
    """

    def __init__(self, config: ModelConfig | None = None, **options) -> None:
        super().__init__()
        self.config = config if config is not None else ModelConfig(**options)
        factors = self.config.factors
        widths = [self.config.base_channels * self.config.channel_factor**level for level in range(self.config.depth)]
        self.down = nn.ModuleList()
        self.pool = nn.ModuleList()
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        previous = self.config.in_channels
        for level, width in enumerate(widths):
            self.down.append(_conv_block(previous, width, self.config.normalization))
            previous = width
            if level < len(factors):
                self.pool.append(nn.MaxPool3d(factors[level]))
        for level in reversed(range(len(factors))):
            self.up.append(
                nn.ConvTranspose3d(widths[level + 1], widths[level], kernel_size=factors[level], stride=factors[level])
            )
            self.merge.append(_conv_block(2 * widths[level], widths[level], self.config.normalization))
        self.head = nn.Conv3d(widths[0], self.config.out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for level, block in enumerate(self.down):
            x = block(x)
            if level < len(self.pool):
                skips.append(x)
                x = self.pool[level](x)
        for up, merge in zip(self.up, self.merge):
            x = up(x)
            x = merge(torch.cat([skips.pop(), x], dim=1))
        return self.head(x)

    @property
    def divisor(self) -> tuple[int, int, int]:
        """Input shapes (and tile starts) must be multiples of this, per axis."""
        z, y, x = 1, 1, 1
        for fz, fy, fx in self.config.factors:
            z, y, x = z * fz, y * fy, x * fx
        return z, y, x

    @property
    def context(self) -> tuple[int, int, int]:
        """Voxels per side that reach an output voxel, rounded up to :attr:`divisor`.

        Counted per axis: two 3x3x3 convolutions on each level down and up (one voxel each
        at that level's scale), the bottom's two, and one pooling window per level (the
        unpooling of a level reads the same window back).
        """
        factors = self.config.factors
        radius = []
        for axis in range(3):
            total, scale = 0, 1
            for level in range(self.config.depth):
                if level < len(factors):
                    f = factors[level][axis]
                    total += 4 * scale + (f - 1) * scale
                    scale *= f
                else:
                    total += 2 * scale
            radius.append(total)
        z, y, x = (math.ceil(r / d) * d for r, d in zip(radius, self.divisor))
        return z, y, x
