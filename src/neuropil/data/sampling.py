"""Training volumes and the multi-domain patch sampler.

The method's sampling: pick a domain uniformly (or by ``weights``), then one of its
volumes uniformly, then a random patch inside it. Each patch carries the labels from
which targets and their known-affinity mask are computed after augmentation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, NamedTuple, Sequence

import numpy as np
from numpy.typing import NDArray

from neuropil.conventions import LabelZero
from neuropil.errors import NeuropilError


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


class Patch(NamedTuple):
    raw: NDArray[np.float32]
    """(z, y, x) in [0, 1]."""
    labels: NDArray[np.uint64]
    known: NDArray[np.bool_] | None
    domain: str
    volume: int
    offset: tuple[int, int, int]


def normalize_raw(raw: NDArray) -> NDArray[np.float32]:
    """Map raw intensities to float32 in [0, 1] by their dtype's range (floats are kept)."""
    raw = np.asarray(raw)
    if np.issubdtype(raw.dtype, np.integer):
        info = np.iinfo(raw.dtype)
        return ((raw.astype(np.float32) - info.min) / float(info.max - info.min)).astype(np.float32)
    return raw.astype(np.float32, copy=False)


class MultiDomainSampler:
    """Random patches from several domains, each a list of :class:`TrainingVolume`.

    Parameters
    ----------
    domains : mapping of domain name to volumes
    patch_shape : (z, y, x) patch size in voxels
    weights : mapping of domain name to weight, optional (uniform by default)
    seed : int
    """

    def __init__(
        self,
        domains: Mapping[str, Sequence[TrainingVolume]],
        *,
        patch_shape: Sequence[int],
        weights: Mapping[str, float] | None = None,
        seed: int = 0,
    ) -> None:
        if not domains:
            raise NeuropilError("no training domains given")
        self.domains = {name: list(volumes) for name, volumes in domains.items()}
        self.patch_shape = tuple(int(s) for s in patch_shape)
        for name, volumes in self.domains.items():
            if not volumes:
                raise NeuropilError(f"domain '{name}' has no volumes")
            for volume in volumes:
                if any(v < p for v, p in zip(volume.raw.shape, self.patch_shape)):
                    raise NeuropilError(
                        f"domain '{name}': volume {volume.name or ''} of shape {volume.raw.shape} "
                        f"is smaller than the patch {self.patch_shape}"
                    )
        self.names = list(self.domains)
        if weights is None:
            probabilities = np.ones(len(self.names))
        else:
            unknown = set(weights) - set(self.names)
            if unknown:
                raise NeuropilError(f"weights name unknown domains: {sorted(unknown)}")
            probabilities = np.array([float(weights.get(name, 0.0)) for name in self.names])
            if (probabilities < 0).any() or probabilities.sum() <= 0:
                raise NeuropilError("domain weights must be >= 0 and not all 0")
        self.probabilities = probabilities / probabilities.sum()
        self.rng = np.random.default_rng(seed)

    def sample(self) -> Patch:
        domain = self.names[self.rng.choice(len(self.names), p=self.probabilities)]
        index = int(self.rng.integers(len(self.domains[domain])))
        volume = self.domains[domain][index]
        offset = tuple(int(self.rng.integers(0, s - p + 1)) for s, p in zip(volume.raw.shape, self.patch_shape))
        region = tuple(slice(o, o + p) for o, p in zip(offset, self.patch_shape))
        known = None if volume.known is None else np.asarray(volume.known[region], dtype=bool)
        return Patch(
            raw=normalize_raw(volume.raw[region]),
            labels=np.asarray(volume.labels[region]).astype(np.uint64),
            known=known,
            domain=domain,
            volume=index,
            offset=offset,
        )
