"""Random training patches per second from chunked, compressed zarr, N5 and HDF5 files.

Usage: python benchmarks/read_patches.py [--shape Z Y X] [--patch Z Y X] [--reads N] [--dir DIR]

Writes one uint8 EM-like volume (smoothed noise, so it compresses like EM) in each format,
then reads random patches through ``neuropil.io.open_volume`` and, for comparison,
directly through the library a user would otherwise call (h5py, zarr, tensorstore for N5
when installed). The last column compares with what training consumes: a batch of 2
patches per step at 0.3-1 s/step on this CPU needs 2-7 patches/s.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from neuropil.io import open_volume, write_volume

NEEDED_PER_SECOND = (2 / 1.0, 2 / 0.3)  # batch of 2 at 1 s/step .. 0.3 s/step


def em_like(shape, seed=0) -> np.ndarray:
    noise = np.random.default_rng(seed).random(shape, dtype=np.float32)
    smooth = ndimage.gaussian_filter(noise, sigma=(1, 3, 3))
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    return (smooth * 255).astype(np.uint8)


def random_offsets(shape, patch, count, seed=1):
    rng = np.random.default_rng(seed)
    return [tuple(int(rng.integers(0, s - p + 1)) for s, p in zip(shape, patch)) for _ in range(count)]


def time_reads(read, offsets, patch) -> float:
    read(tuple(slice(o, o + p) for o, p in zip(offsets[0], patch)))  # open files, warm caches of metadata
    start = time.perf_counter()
    for offset in offsets:
        region = tuple(slice(o, o + p) for o, p in zip(offset, patch))
        data = read(region)
        assert data.shape == tuple(patch)
    return len(offsets) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(128, 512, 512))
    parser.add_argument("--patch", type=int, nargs=3, default=(32, 128, 128))
    parser.add_argument("--chunks", type=int, nargs=3, default=(16, 64, 64))
    parser.add_argument("--reads", type=int, default=40)
    parser.add_argument("--dir", type=Path, default=None, help="where to write the test files (default: a temp dir)")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(dir=args.dir))
    try:
        volume = em_like(tuple(args.shape))
        chunks = tuple(args.chunks)
        files = {
            "zarr v3 default": (f"{folder}/v.zarr/raw", dict(chunks=chunks)),
            "zarr v2 default": (f"{folder}/v2.zarr/raw", dict(chunks=chunks, zarr_format=2)),
            "HDF5 gzip": (f"{folder}/v.h5:raw", dict(chunks=chunks, compression="gzip")),
            "HDF5 lzf": (f"{folder}/lzf.h5:raw", dict(chunks=chunks, compression="lzf")),
            "N5 gzip": (f"{folder}/v.n5/raw", dict(chunks=chunks, compression="gzip")),
        }
        offsets = random_offsets(volume.shape, args.patch, args.reads)
        rows = []
        numpy_rate = time_reads(lambda region: np.ascontiguousarray(volume[region]), offsets, args.patch)
        rows.append(("numpy in memory", volume.nbytes, numpy_rate, None))
        for name, (address, options) in files.items():
            write_volume(address, volume, **options)
            size = (
                sum(
                    p.stat().st_size for p in Path(address.split(":")[0].rsplit("/raw", 1)[0]).rglob("*") if p.is_file()
                )
                if ":" not in address
                else Path(address.split(":")[0]).stat().st_size
            )
            with open_volume(address) as opened:
                ours = time_reads(lambda region: opened[region], offsets, args.patch)
            theirs = direct_reader(name, address)
            direct = time_reads(theirs, offsets, args.patch) if theirs else None
            rows.append((name, size, ours, direct))
        print(
            f"volume {tuple(args.shape)} uint8, chunks {chunks}, {args.reads} random {tuple(args.patch)} patches; "
            f"training needs {NEEDED_PER_SECOND[0]:.0f}-{NEEDED_PER_SECOND[1]:.1f} patches/s "
            "(batch 2 at 1-0.3 s/step)"
        )
        print(
            f"| {'format':<16} | {'MB on disk':>10} | {'open_volume patches/s':>21} | {'direct library patches/s':>24} | "
            f"{'x needed (at 0.3 s/step)':>24} |"
        )
        print(f"|{'-' * 18}|{'-' * 12}|{'-' * 23}|{'-' * 26}|{'-' * 26}|")
        for name, size, ours, direct in rows:
            direct_text = f"{direct:.1f}" if direct else "-"
            print(
                f"| {name:<16} | {size / 1e6:>10.1f} | {ours:>21.1f} | {direct_text:>24} | "
                f"{ours / NEEDED_PER_SECOND[1]:>24.1f} |"
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def direct_reader(name: str, address: str):
    """The same read with the library a user would call directly."""
    if name.startswith("HDF5"):
        import h5py

        path, key = address.split(":")
        dataset = h5py.File(path, "r")[key]
        return lambda region: dataset[region]
    if name.startswith("zarr"):
        import zarr

        array = zarr.open_array(address, mode="r")
        return lambda region: array[region]
    try:
        import tensorstore
    except ImportError:
        return None
    store = tensorstore.open({"driver": "n5", "kvstore": {"driver": "file", "path": address}}).result()
    # tensorstore sees N5's x-first axes.
    return lambda region: np.asarray(store[tuple(reversed(region))].read().result()).transpose()


if __name__ == "__main__":
    main()
