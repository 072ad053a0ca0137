"""Training batches as a function of their index, made in the training process or in worker processes.

Batch ``i`` of a run is drawn with a generator seeded by ``(seed, i)`` alone: the domains,
volumes and patch positions (:class:`~neuropil.data.sampling.MultiDomainSampler`), then
every augmentation (:func:`~neuropil.train.augment.augment`), then the targets. So a batch
does not depend on which process makes it, on how many workers there are or on what was
drawn before it: a resumed run draws exactly the batches an uninterrupted one would, with
no generator state to store, and ``workers: 4`` trains the same weights as ``workers: 0``.

Workers are torch :class:`~torch.utils.data.DataLoader` processes over the batch indices in
order (each with one CPU thread, so they do not compete with the training step's threads),
a few batches ahead of the training step.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from typing import NamedTuple

import numpy as np
import torch

from neuropil.data.sampling import MultiDomainSampler
from neuropil.data.volumes import TrainingVolume
from neuropil.train.augment import AugmentConfig, augment


class Batch(NamedTuple):
    """One training batch: ``(b, 1, z, y, x)`` raw in [0, 1], ``(b, c, z, y, x)`` targets and their mask."""

    raw: np.ndarray
    target: np.ndarray
    mask: np.ndarray


class BatchMaker:
    """Makes batch ``index`` of a run: ``maker(index) -> Batch``. Picklable, so workers can hold one.

    Parameters
    ----------
    domains : mapping of domain name to training volumes
    patch_shape : (z, y, x) voxels
    batch_size : patches per batch
    offsets : affinity offsets of the model's channels
    augment_config : the run's augmentation
    weights : domain sampling weights, optional (uniform)
    seed : the run's seed; batch ``index`` uses ``numpy.random.default_rng((seed, index))``
    """

    def __init__(
        self,
        domains: Mapping[str, Sequence[TrainingVolume]],
        *,
        patch_shape: Sequence[int],
        batch_size: int,
        offsets: Sequence[Sequence[int]],
        augment_config: AugmentConfig,
        weights: Mapping[str, float] | None = None,
        seed: int = 0,
    ) -> None:
        self.sampler = MultiDomainSampler(domains, patch_shape=patch_shape, weights=weights, seed=seed)
        self.batch_size = int(batch_size)
        self.offsets = [tuple(int(v) for v in offset) for offset in offsets]
        self.augment_config = augment_config
        self.seed = int(seed)

    def rng(self, index: int) -> np.random.Generator:
        """The generator of batch ``index``: a function of the run's seed and the index only."""
        return np.random.default_rng((self.seed, int(index)))

    def __call__(self, index: int) -> Batch:
        rng = self.rng(index)
        raws, targets, masks = [], [], []
        for _ in range(self.batch_size):
            patch = self.sampler.sample(rng)
            volume = self.sampler.domains[patch.domain][patch.volume]
            patch = augment(
                patch,
                self.augment_config,
                voxel_size=volume.voxel_size,
                label_zero=volume.label_zero,
                in_plane_only=volume.in_plane_only,
                rng=rng,
            )
            target = volume.targets(self.offsets, labels=patch.labels, known=patch.known, label_zero=patch.label_zero)
            raws.append(patch.raw[None])
            targets.append(target.affinities)
            masks.append(target.mask)
        return Batch(np.stack(raws), np.stack(targets), np.stack(masks))


class _Indexed(torch.utils.data.Dataset):
    """The batches of a maker as a map-style dataset: item ``i`` is batch ``i``."""

    def __init__(self, maker: BatchMaker) -> None:
        self.maker = maker

    def __getitem__(self, index: int) -> Batch:
        return self.maker(index)


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)


def batches(
    maker: BatchMaker, start: int, stop: int, *, workers: int = 0, prefetch: int = 2
) -> Generator[Batch, None, None]:
    """Batches ``start, start + 1, ..., stop - 1`` in order, from ``workers`` processes (0: this one).

    From workers the arrays arrive as torch tensors (in shared memory), else as numpy arrays.

    With workers, each keeps ``prefetch`` batches ready. Closing the iterator (or leaving a
    ``for`` loop over it) stops the workers.
    """
    if workers == 0:
        for index in range(start, stop):
            yield maker(index)
        return
    loader = torch.utils.data.DataLoader(
        _Indexed(maker),
        batch_size=None,
        sampler=range(start, stop),
        num_workers=workers,
        prefetch_factor=prefetch,
        worker_init_fn=_one_thread,
    )
    iterator = iter(loader)
    try:
        yield from iterator
    finally:
        # DataLoader's iterator stops its workers when it goes; drop it now, not at garbage collection.
        del iterator
