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

    def targets(self, offsets, *, labels: NDArray | None = None, known: NDArray | None = None):
        """Affinity targets under this volume's label semantics.

        ``labels`` and ``known`` default to the whole volume's; pass a (possibly augmented)
        patch of them to get the patch's targets.
        """
        from neuropil.targets import affinities_from_labels

        return affinities_from_labels(
            self.labels if labels is None else labels,
            offsets=offsets,
            label_zero=self.label_zero,
            known=self.known if labels is None else known,
            in_plane_only=self.in_plane_only,
        )

    def crop(self, region: tuple[slice, ...], *, part: str, **metadata) -> "TrainingVolume":
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
    min_known_fraction : float
        Redraw a patch (up to 100 times) while fewer of its voxels are known.
    """

    def __init__(
        self,
        domains: Mapping[str, Sequence[TrainingVolume]],
        *,
        patch_shape: Sequence[int],
        weights: Mapping[str, float] | None = None,
        seed: int = 0,
        min_known_fraction: float = 0.0,
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
        if not 0.0 <= min_known_fraction <= 1.0:
            raise NeuropilError(f"min_known_fraction must lie in [0, 1], got {min_known_fraction}")
        self.min_known_fraction = float(min_known_fraction)

    MAX_TRIES = 100

    def sample(self) -> Patch:
        domain = self.names[self.rng.choice(len(self.names), p=self.probabilities)]
        index = int(self.rng.integers(len(self.domains[domain])))
        volume = self.domains[domain][index]
        for _ in range(self.MAX_TRIES):
            offset = tuple(int(self.rng.integers(0, s - p + 1)) for s, p in zip(volume.raw.shape, self.patch_shape))
            region = tuple(slice(o, o + p) for o, p in zip(offset, self.patch_shape))
            known = None if volume.known is None else np.asarray(volume.known[region], dtype=bool)
            # Patches mostly outside the labelled data teach nothing; draw again (bounded).
            if known is None or known.mean() >= self.min_known_fraction:
                break
        return Patch(
            raw=normalize_raw(volume.raw[region]),
            labels=np.asarray(volume.labels[region]).astype(np.uint64),
            known=known,
            domain=domain,
            volume=index,
            offset=offset,
        )


VALIDATION_WIDTH = 150
"""Voxels ``0 <= x < 150`` at the training voxel size are validation (the method's band)."""


def split_validation_band(
    volume: TrainingVolume, *, width: int = VALIDATION_WIDTH, axis: int = 2
) -> tuple[TrainingVolume | None, TrainingVolume | None]:
    """Cut a volume into its training part (``x >= width``) and validation band (``x < width``).

    The parts are separate volumes (views, no copies), so a patch sampled from one can
    never straddle the band. A part with no voxels is None.

    Parameters
    ----------
    volume : TrainingVolume
        At the training voxel size (the band is counted in its voxels).
    width : int
        Band width in voxels along ``axis``.
    axis : int
        0, 1 or 2 for z, y, x.

    Returns
    -------
    (training, validation) : TrainingVolume or None each
    """
    if width < 0:
        raise NeuropilError(f"validation band width must be >= 0, got {width}")
    size = volume.raw.shape[axis]
    parts = []
    for name, start, stop in (("train", min(width, size), size), ("validation", 0, min(width, size))):
        if stop <= start:
            parts.append(None)
            continue
        region = [slice(None)] * 3
        region[axis] = slice(start, stop)
        region = tuple(region)
        parts.append(
            volume.crop(region, part=name, band_axis=axis, band_start=start)
        )
    return parts[0], parts[1]


def catalog_domains(
    datasets: Sequence[str],
    *,
    target_voxel_size: Sequence[float],
    validation_width: int | None = None,
    patch_shape: Sequence[int] | None = None,
) -> tuple[dict[str, list[TrainingVolume]], dict[str, list[TrainingVolume]]]:
    """Training and validation domains from catalog datasets, one domain per dataset.

    Every ``train``-role volume is loaded at ``target_voxel_size`` and cut by
    :func:`split_validation_band`; ``test``-role volumes are left out. Parts smaller
    than ``patch_shape`` are dropped with a warning; a dataset left with no training
    part raises.

    The band is ``validation_width`` voxels wide when given, else the catalog entry's
    ``validation_width``, else the method's 150 (:data:`VALIDATION_WIDTH`). The small
    shared sets set their own (isbi2012 is only 158 voxels wide at 13 nm).

    Returns
    -------
    (training, validation) : dicts of domain name to volumes, ready for
    :class:`MultiDomainSampler` (synthetic domains can be added to the same dicts).
    """
    import logging

    from neuropil.data.catalog import get_dataset
    from neuropil.data.labels import load_training_volume

    logger = logging.getLogger(__name__)
    training: dict[str, list[TrainingVolume]] = {}
    validation: dict[str, list[TrainingVolume]] = {}
    for name in datasets:
        entry = get_dataset(name)
        width = validation_width if validation_width is not None else entry.validation_width
        width = VALIDATION_WIDTH if width is None else width
        usable = {n: v for n, v in entry.volumes.items() if v.role == "train" and v.raw and v.labels}
        if not usable:
            # Say so, rather than blame the validation band for a dataset that cannot train at all.
            raise NeuropilError(f"dataset '{name}' has no train volume with both a raw image and labels")
        for volume_name, volume in usable.items():
            loaded = load_training_volume(entry, volume_name, target_voxel_size=target_voxel_size)
            train_part, validation_part = split_validation_band(loaded, width=width)
            for part, into in ((train_part, training), (validation_part, validation)):
                if part is None:
                    continue
                # Validation is predicted whole (padded), so only training parts must hold a patch.
                small = patch_shape is not None and any(s < p for s, p in zip(part.raw.shape, patch_shape))
                if into is training and small:
                    logger.warning("%s: shape %s is smaller than the patch %s; left out", part.name,
                                   part.raw.shape, tuple(patch_shape))
                    continue
                into.setdefault(name, []).append(part)
        if name not in training:
            raise NeuropilError(
                f"dataset '{name}' has no training data left at {tuple(target_voxel_size)} nm beside a "
                f"{width}-voxel validation band"
            )
    return training, validation
