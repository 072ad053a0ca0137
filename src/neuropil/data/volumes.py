"""Training volumes: a labelled volume at the training voxel size, and patches cut from it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

from neuropil.conventions import LabelZero
from neuropil.errors import NeuropilError
from neuropil.targets import affinities_from_labels


@dataclass(frozen=True)
class TrainingVolume:
    """One labelled volume at the training voxel size."""

    raw: NDArray
    """(z, y, x) image; uint8 or float in [0, 1]."""
    labels: NDArray
    """(z, y, x) integer object ids, same shape as ``raw``."""
    voxel_size: tuple[float, float, float]
    label_zero: LabelZero = LabelZero.BOUNDARY
    in_plane_only: bool = False
    """Labels are 2-D per section; affinities across sections are unknown."""
    known: NDArray | None = None
    """(z, y, x) bool, voxels whose labels can be trusted (None: all)."""
    name: str = ""
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = self.name or "training volume"
        if self.raw.shape != self.labels.shape:
            raise NeuropilError(f"{where}: raw shape {self.raw.shape} does not match labels shape {self.labels.shape}")
        if self.raw.ndim != 3:
            raise NeuropilError(f"{where}: expected a 3-D (z, y, x) volume, got shape {self.raw.shape}")
        if not np.issubdtype(self.labels.dtype, np.integer):
            raise NeuropilError(f"{where}: labels must hold integer ids, got dtype {self.labels.dtype}")
        if self.known is not None and self.known.shape != self.labels.shape:
            raise NeuropilError(f"{where}: known-voxel mask shape {self.known.shape} does not match labels")
        if self.raw.size == 0:
            raise NeuropilError(f"{where}: empty volume")

    def targets(
        self,
        offsets,
        *,
        labels: NDArray | None = None,
        known: NDArray | None = None,
        label_zero: LabelZero | str | None = None,
    ):
        """Affinity targets under this volume's label semantics.

        ``labels`` and ``known`` default to the whole volume's; pass a (possibly augmented)
        patch of them to get the patch's targets, with the patch's ``label_zero`` when
        augmentation changed what label 0 means (default: the volume's).
        """

        return affinities_from_labels(
            self.labels if labels is None else labels,
            offsets=offsets,
            label_zero=self.label_zero if label_zero is None else label_zero,
            known=self.known if labels is None else known,
            in_plane_only=self.in_plane_only,
        )

    def crop(self, region: tuple[slice, ...], *, part: str, **metadata) -> TrainingVolume:
        """The sub-volume at ``region`` (views, not copies), named ``name[part]``."""
        return TrainingVolume(
            raw=self.raw[region],
            labels=self.labels[region],
            voxel_size=self.voxel_size,
            label_zero=self.label_zero,
            in_plane_only=self.in_plane_only,
            known=None if self.known is None else self.known[region],
            name=f"{self.name}[{part}]",
            metadata={**self.metadata, "part": part, **metadata},
        )


class Patch(NamedTuple):
    """A training patch cut from a volume, as drawn and as augmentation leaves it."""

    raw: NDArray[np.float32]
    """(z, y, x) in [0, 1]."""
    labels: NDArray[np.uint64]
    """(z, y, x) object ids."""
    known: NDArray[np.bool_] | None
    """(z, y, x) voxels whose labels can be trusted (None: all)."""
    domain: str
    volume: int
    """Index of the volume in its domain."""
    offset: tuple[int, int, int]
    """(z, y, x) voxel of the volume at the patch's origin."""
    label_zero: LabelZero | None = None
    """What label 0 means in this patch; None: its volume's. Opening extracellular gaps makes it
    ``extracellular`` (see :mod:`neuropil.train.augment`)."""
    augmentations: tuple[str, ...] = ()
    """What augmentation applied, in order, for people (e.g. ``"flip zx"``, ``"missing z=3"``)."""


def normalize_raw(raw: NDArray) -> NDArray[np.float32]:
    """Map raw intensities to float32 in [0, 1] by their dtype's range (floats are kept)."""
    raw = np.asarray(raw)
    if np.issubdtype(raw.dtype, np.integer):
        info = np.iinfo(raw.dtype)
        return ((raw.astype(np.float32) - info.min) / float(info.max - info.min)).astype(np.float32)
    return raw.astype(np.float32, copy=False)
