"""Write a PNG with one xy slice (raw and labels) of every synthetic domain preset.

Usage: python benchmarks/synth_gallery.py OUT.png [--seed N] [--size PIXELS]

Prints the generation time of each volume. Volumes are 32 x size x size voxels at each preset's
voxel size, so the physical field of view differs between presets as it does between datasets.
"""

from __future__ import annotations

import argparse
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from neuropil.data.synth import PRESETS, generate


def label_colours(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Random colour per id, black for 0."""
    palette = np.random.default_rng(seed).uniform(0.2, 1.0, size=(int(labels.max()) + 1, 3))
    palette[0] = 0
    return palette[labels]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", help="PNG file to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()

    figure, axes = plt.subplots(2, len(PRESETS), figsize=(3.2 * len(PRESETS), 6.6))
    print(f"{'preset':<12} {'voxel_size':<18} {'shape':<16} {'seconds':>8} {'objects':>8} {'label 0':>8}")
    for column, name in enumerate(PRESETS):
        shape = (32, args.size, args.size)
        start = time.perf_counter()
        volume = generate(name, shape=shape, seed=args.seed)
        seconds = time.perf_counter() - start
        zero = float((volume.labels == 0).mean())
        print(
            f"{name:<12} {volume.voxel_size!s:<18} {shape!s:<16} {seconds:8.3f} {int(volume.labels.max()):8d} {zero:8.3f}"
        )
        middle = shape[0] // 2
        axes[0, column].imshow(volume.raw[middle], cmap="gray", vmin=0, vmax=255)
        axes[0, column].set_title(f"{name}\n{volume.voxel_size} nm", fontsize=9)
        axes[1, column].imshow(label_colours(volume.labels[middle]))
        for axis in axes[:, column]:
            axis.set_xticks([])
            axis.set_yticks([])
    figure.tight_layout()
    figure.savefig(args.output, dpi=100)


if __name__ == "__main__":
    main()
