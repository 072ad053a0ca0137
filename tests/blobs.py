"""Small labelled volumes for training tests: cells around random seeds, separated by dark boundaries."""

import numpy as np
from scipy import ndimage

from neuropil.data.volumes import TrainingVolume

VOXEL = (20.0, 10.0, 10.0)


def blob_volume(seed: int, *, shape: tuple[int, int, int], cells: int) -> TrainingVolume:
    """``cells`` cells around random seeds (nearest seed in nm), separated by dark one-voxel boundaries."""
    rng = np.random.default_rng(seed)
    seeds = np.zeros(shape, np.int32)
    points = [tuple(rng.integers(0, s) for s in shape) for _ in range(cells)]
    for index, point in enumerate(points, start=1):
        seeds[point] = index
    _, nearest = ndimage.distance_transform_edt(seeds == 0, sampling=VOXEL, return_indices=True)
    labels = seeds[tuple(nearest)].astype(np.uint64)
    boundary = ndimage.grey_erosion(labels, size=(1, 3, 3)) != ndimage.grey_dilation(labels, size=(1, 3, 3))
    labels[boundary] = 0
    raw = np.where(boundary, 40, 180) + rng.normal(0, 10, shape)
    return TrainingVolume(
        raw=np.clip(raw, 0, 255).astype(np.uint8), labels=labels, voxel_size=VOXEL, name=f"blobs{seed}"
    )
