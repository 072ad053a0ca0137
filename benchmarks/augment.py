"""Milliseconds per training patch of each augmentation, at the default training shape and a large one.

Usage: python benchmarks/augment.py [--shapes 16,64,64 64,128,128] [--repeats N]

Patches come from synthetic volumes at 25x13x13 nm of a domain whose label 0 is thin
boundaries (cremi-like) and one whose label 0 is extracellular space (cryo-ecs). For each
augmentation: the time it takes when applied (alone, to a whole patch, or to one section
for the per-section defects), its default probability and the expected time per patch at
the defaults (time x probability, x sections for the per-section ones; flip's time is all
three axes, its expectation half that). Then the measured time of ``augment`` with the
default configuration, and of drawing a patch and computing its targets. What loading
and augmentation add to a training step: ``benchmarks/train_step.py``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
from scipy import ndimage

from neuropil.conventions import NEAREST_NEIGHBOURS
from neuropil.data.sampling import MultiDomainSampler
from neuropil.data.synth import synthetic_volume
from neuropil.data.volumes import Patch
from neuropil.train import augment as aug

VOXEL = (25.0, 13.0, 13.0)
PER_SECTION = {"missing_section", "misalignment", "occlusion", "motion_blur"}


def only(name: str) -> aug.AugmentConfig:
    """The configuration applying ``name`` with probability 1 (its default ranges) and nothing else."""
    none = aug.AugmentConfig.none()
    field = getattr(aug.AugmentConfig(), name)
    return none.model_copy(update={name: field.model_copy(update={"probability": 1.0})})


def one_section(name: str, patch: Patch, rng: np.random.Generator) -> Patch:
    """One event of a per-section defect, on the middle section, at its default range's middle."""
    config = aug.AugmentConfig()
    z = patch.raw.shape[0] // 2
    if name == "missing_section":
        raw = patch.raw.copy()
        raw[z] = np.mean(config.missing_section.value)
        return patch._replace(raw=raw)
    if name == "misalignment":
        return aug.shift_sections(patch, sections=slice(z, z + 1), shift=(3, -2))
    if name == "occlusion":
        extent = (patch.raw.shape[1] * VOXEL[1] / 2, patch.raw.shape[2] * VOXEL[2] / 2)
        return aug.occlude(patch, section=z, voxel_size=VOXEL, centre_nm=extent, angle=0.7, width_nm=100.0, value=0.1)
    kernel = aug.motion_blur_kernel(length_nm=float(np.mean(config.motion_blur.length_nm)), angle=0.7, voxel_size=VOXEL)
    raw = patch.raw.copy()
    raw[z] = ndimage.convolve(raw[z], kernel, mode="nearest")
    return patch._replace(raw=raw)


def milliseconds(run: Callable[[], object], repeats: int) -> float:
    run()  # warm caches
    start = time.perf_counter()
    for _ in range(repeats):
        run()
    return (time.perf_counter() - start) / repeats * 1e3


def measure(shape: tuple[int, int, int], repeats: int) -> dict[str, float]:
    volume_shape = (shape[0] + 8, shape[1] + 32, shape[2] + 32)
    domains = {
        name: [synthetic_volume(name, shape=volume_shape, target_voxel_size=VOXEL, seed=0)]
        for name in ("cremi-like", "cryo-ecs")
    }
    sampler = MultiDomainSampler(domains, patch_shape=shape, seed=0)
    patches = []
    for _ in range(8):
        patch = sampler.sample()
        patches.append(patch._replace(label_zero=domains[patch.domain][0].label_zero))
    extracellular = [patch for patch in patches if patch.label_zero == "extracellular"]
    rng = np.random.default_rng(0)
    counter = iter(range(10**9))

    def next_patch(among: list[Patch] = patches) -> Patch:
        return among[next(counter) % len(among)]

    def section_event(name: str) -> Callable[[], object]:
        return lambda: one_section(name, next_patch(), rng)

    def alone(config: aug.AugmentConfig, among: list[Patch]) -> Callable[[], object]:
        return lambda: aug.augment(next_patch(among), config, voxel_size=VOXEL, rng=rng)

    times = {}
    for name in aug.AugmentConfig.model_fields:
        if name in PER_SECTION:
            times[name] = milliseconds(section_event(name), repeats)
        else:
            # closing applies only where label 0 is extracellular space
            times[name] = milliseconds(alone(only(name), extracellular if name == "close_gaps" else patches), repeats)
    times["augment, defaults"] = milliseconds(alone(aug.AugmentConfig(), patches), 4 * repeats)

    def load() -> None:
        patch = sampler.sample()
        volume = domains[patch.domain][patch.volume]
        volume.targets(NEAREST_NEIGHBOURS, labels=patch.labels, known=patch.known)

    times["sample + targets"] = milliseconds(load, 4 * repeats)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["16,64,64", "64,128,128"], help="patch shapes z,y,x")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    shapes = []
    for text in args.shapes:
        z, y, x = (int(size) for size in text.split(","))
        shapes.append((z, y, x))
    results = {shape: measure(shape, args.repeats) for shape in shapes}
    defaults = aug.AugmentConfig()
    header = "| augmentation | default probability | " + " | ".join(
        f"ms applied {'x'.join(map(str, s))} | ms expected {'x'.join(map(str, s))}" for s in shapes
    )
    print(header + " |")
    print("|" + "---|" * (2 + 2 * len(shapes)))
    for name in aug.AugmentConfig.model_fields:
        probability = getattr(defaults, name).probability
        unit = " per section" if name in PER_SECTION else (" per axis" if name == "flip" else "")
        cells = []
        for shape in shapes:
            events = probability * (shape[0] if name in PER_SECTION else 1)
            cells += [f"{results[shape][name]:.1f}", f"{results[shape][name] * events:.1f}"]
        print(f"| {name} | {probability:g}{unit} | " + " | ".join(cells) + " |")
    for name in ("augment, defaults", "sample + targets"):
        cells = []
        for shape in shapes:
            cells += ["", f"{results[shape][name]:.1f}"]
        print(f"| **{name}** (measured) | | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
