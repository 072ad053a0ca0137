"""Training volumes and the multi-domain patch sampler.

The method's sampling: pick a domain uniformly (or by ``weights``), then one of its
volumes uniformly, then a random patch inside it. Each patch carries the labels from
which targets and their known-affinity mask are computed after augmentation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from neuropil.data.volumes import Patch, TrainingVolume, normalize_raw
from neuropil.errors import NeuropilError


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
        shape = tuple(int(s) for s in patch_shape)
        if len(shape) != 3 or min(shape) < 1:
            raise NeuropilError(f"patch shape needs 3 positive sizes (z, y, x), got {tuple(patch_shape)}")
        self.patch_shape: tuple[int, int, int] = shape
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

    def sample(self, rng: np.random.Generator | None = None) -> Patch:
        """One patch, drawn with ``rng`` (default: the sampler's own generator, seeded by ``seed``)."""
        rng = self.rng if rng is None else rng
        domain = self.names[rng.choice(len(self.names), p=self.probabilities)]
        index = int(rng.integers(len(self.domains[domain])))
        volume = self.domains[domain][index]
        for _ in range(self.MAX_TRIES):
            z, y, x = (int(rng.integers(0, s - p + 1)) for s, p in zip(volume.raw.shape, self.patch_shape))
            offset = (z, y, x)
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
    if axis not in (0, 1, 2):
        raise NeuropilError(f"validation band axis must be 0, 1 or 2 (z, y, x), got {axis}")
    size = volume.raw.shape[axis]
    parts: list[TrainingVolume | None] = []
    for name, start, stop in (("train", min(width, size), size), ("validation", 0, min(width, size))):
        if stop <= start:
            parts.append(None)
            continue
        region = [slice(None)] * 3
        region[axis] = slice(start, stop)
        parts.append(volume.crop(tuple(region), part=name, band_axis=axis, band_start=start))
    return parts[0], parts[1]
