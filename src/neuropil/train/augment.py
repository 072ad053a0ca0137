"""Augmentation of training patches: geometry (flips, in-plane transpose) and intensity.

Geometry is applied to raw, labels and known-voxel mask alike, before targets are
computed, so affinities stay consistent with their offsets.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy.ndimage import gaussian_filter

from neuropil.data.volumes import Patch


def augment(patch: Patch, *, rng: np.random.Generator, transpose_xy: bool = True, intensity: bool = True) -> Patch:
    """Randomly flipped, transposed and intensity-changed copy of ``patch``.

    ``transpose_xy`` should be off when y and x voxel sizes differ.
    """
    raw, labels, known = patch.raw, patch.labels, patch.known
    for axis in range(3):
        if rng.random() < 0.5:
            raw, labels = np.flip(raw, axis), np.flip(labels, axis)
            known = None if known is None else np.flip(known, axis)
    if transpose_xy and rng.random() < 0.5:
        raw, labels = raw.transpose(0, 2, 1), labels.transpose(0, 2, 1)
        known = None if known is None else known.transpose(0, 2, 1)
    raw = np.ascontiguousarray(raw, dtype=np.float32)
    if intensity:
        raw = intensity_augment(raw, rng=rng)
    return patch._replace(
        raw=raw,
        labels=np.ascontiguousarray(labels),
        known=None if known is None else np.ascontiguousarray(known),
    )


def intensity_augment(raw: NDArray[np.float32], *, rng: np.random.Generator) -> NDArray[np.float32]:
    """Contrast, brightness, gamma, blur and noise, as microscopes and preparations vary."""
    out: NDArray[np.floating] = raw.copy()
    mean = float(out.mean())
    out = (out - mean) * rng.uniform(0.6, 1.4) + mean + rng.uniform(-0.15, 0.15)
    out = np.clip(out, 0.0, 1.0) ** rng.uniform(0.7, 1.5)
    if rng.random() < 0.3:
        out = gaussian_filter(out, sigma=(0.0, *([rng.uniform(0.3, 1.2)] * 2)))
    if rng.random() < 0.5:
        out = out + rng.normal(0.0, rng.uniform(0.0, 0.08), size=out.shape)
    return np.clip(out, 0.0, 1.0).astype(np.float32)
