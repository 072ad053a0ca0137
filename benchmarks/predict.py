"""Prediction speed: ``predict_affinities`` at its defaults against the model alone, same volume, same run.

"model alone" is one forward pass of the same network over the same volume, padded (mirrored)
to its pooling grid, with the sigmoid and the copy back to numpy: what a user gets by calling
the network by hand, with no tiling. The other rows predict the same volume:

- ``defaults``: ``predict_affinities(image, model)``: tiles from the memory budget (one pass
  when the volume fits), no mirrored border;
- ``tiles 32x128x128, border``: the earlier defaults (tiles of 32x128x128 voxels, each reading
  the model's context around it, a mirrored border of two pooling cells);
- ``blockwise``: ``predict_blockwise`` from a zarr array into a zarr array (default block shape,
  one worker; reading, writing and Dask included);
- ``defaults, budget B``: a larger volume (the image mirrored to twice its width) under a memory
  budget too small for one pass, against the model alone on that volume: what tiling costs.

The volume is vnc-gerhard2013's stack (ssTEM, 20 sections of 1024x1024 at 50x4.6x4.6 nm) rescaled
to the model's 25x13x13 nm, the model the shipped ``generalist-25x13x13``. Rows are timed ``--repeats`` times, interleaved with
the model alone; seconds are medians, the ratio (model alone's seconds over the row's) the
median of the same repeat's ratios. The second table compares the memory estimate of one pass
(``neuropil.predict.pass_bytes``, which the tile choice uses) with the peak resident memory a
pass adds, measured in a fresh process.

    PYTHONPATH=src python benchmarks/predict.py [--data ../shared/data] [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

RERUN = "PYTHONPATH=src python benchmarks/predict.py [--data ../shared/data] [--repeats 3] [--device cpu]"
MODEL = "generalist-25x13x13"
VOLUME = "vnc-gerhard2013"


def model_alone(model, image: np.ndarray, device: str) -> np.ndarray:
    from neuropil.data.volumes import normalize_raw
    from neuropil.predict import round_up

    covered = [round_up(s, d) for s, d in zip(image.shape, model.divisor)]
    padded = np.pad(normalize_raw(image), [(0, c - s) for c, s in zip(covered, image.shape)], mode="reflect")
    with torch.inference_mode():
        tensor = torch.from_numpy(padded[None, None]).to(device)
        result = torch.sigmoid(model(tensor)).float().cpu().numpy()[0]
    return result[(slice(None), *(slice(0, s) for s in image.shape))]


def timed(call) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    call()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def measured_peak(shape: tuple[int, ...], base: int) -> dict:
    """Peak resident memory one pass adds, in a fresh process (``/proc/self/status`` VmHWM)."""
    code = f"""
import json, torch
from neuropil.model import UNet3D
from neuropil.predict import pass_bytes
def peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) * 1024
model = UNet3D(base_channels={base}, depth=4, voxel_size=(25.0, 13.0, 13.0), normalization="batch").eval()
x = torch.rand((1, 1, *{tuple(shape)!r}))
before = peak()
with torch.inference_mode():
    model(x)
print(json.dumps({{"measured": peak() - before, "estimate": pass_bytes(model, {tuple(shape)!r})}}))
"""
    output = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("NEUROPIL_DATA", "../shared/data")))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from neuropil.blockwise import predict_blockwise
    from neuropil.checkpoint import load_model
    from neuropil.data.resample import resample
    from neuropil.errors import NeuropilError
    from neuropil.io import write_volume
    from neuropil.predict import open_raw, pass_bytes, plan_tiles, predict_affinities

    os.environ["NEUROPIL_DATA"] = str(args.data)
    model = load_model(MODEL, device=args.device).eval()
    try:
        source = open_raw(VOLUME, voxel_size=None, model_voxel_size=model.config.voxel_size)
    except NeuropilError as error:
        sys.exit(f"{VOLUME} is not readable ({error}): give --data, the folder that holds it")
    with source.volume as volume:
        raw = volume.read()
    image = resample(raw, voxel_size=source.voxel_size, target_voxel_size=model.config.voxel_size, kind="image")
    wide = np.concatenate([image, image[:, :, ::-1]], axis=2)
    budget = pass_bytes(model, wide.shape) // 3
    print(f"rerun: {RERUN}")
    print(
        f"model {MODEL} on {args.device}, torch threads {torch.get_num_threads()}; volume {image.shape} "
        f"({VOLUME} at {model.config.voxel_size} nm), wide {wide.shape}\n"
    )

    work = Path(tempfile.mkdtemp(prefix="neuropil-predict-bench-"))
    write_volume(f"{work / 'raw.zarr'}/raw", image, voxel_size=model.config.voxel_size)
    checks = {}

    def blockwise():
        predict_blockwise(
            MODEL,
            f"{work / 'raw.zarr'}/raw",
            f"{work / 'out.zarr'}/affs",
            block_shape=(64, 256, 256),
            device=args.device,
            progress=False,
        )

    rows = [
        (
            "defaults",
            image,
            lambda: checks.__setitem__(
                "defaults", predict_affinities(image, model, device=args.device, progress=False)
            ),
        ),
        (
            "tiles 32x128x128, border",
            image,
            lambda: predict_affinities(
                image, model, tile_shape=(32, 128, 128), border=(8, 16, 16), device=args.device, progress=False
            ),
        ),
        ("blockwise (blocks 64x256x256)", image, blockwise),
        (
            f"defaults, budget {budget / 2**30:.2f} GiB",
            wide,
            lambda: predict_affinities(wide, model, memory=budget, device=args.device, progress=False),
        ),
    ]
    alone = {}
    table = []
    model_alone(model, image[:8, :64, :64], args.device)  # warm-up
    for name, volume, call in rows:
        seconds, ratios = [], []
        for _ in range(args.repeats):
            reference = timed(lambda v=volume: alone.__setitem__(v.shape, model_alone(model, v, args.device)))
            mine = timed(call)
            seconds.append((reference, mine))
            ratios.append(reference / mine)
            if name == "blockwise (blocks 64x256x256)":
                import shutil

                shutil.rmtree(work / "out.zarr", ignore_errors=True)
        plan = plan_tiles(volume.shape, model, memory=budget if "budget" in name else None, device=args.device)
        table.append(
            (
                name,
                volume,
                statistics.median(s for s, _ in seconds),
                statistics.median(m for _, m in seconds),
                statistics.median(ratios),
                plan if name.startswith("defaults") else None,
            )
        )
    difference = float(np.abs(checks["defaults"] - alone[image.shape]).max())

    print(
        "| prediction | Mvoxels | model alone s | this s | Mvox/s | ratio to model alone | tiles | computed / volume |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, volume, reference, mine, ratio, plan in table:
        tiles = "" if plan is None else str(plan.tiles)
        overhead = "" if plan is None else f"{1 / plan.efficiency:.2f}"
        print(
            f"| {name} | {volume.size / 1e6:.1f} | {reference:.2f} | {mine:.2f} | {volume.size / mine / 1e6:.2f} "
            f"| {ratio:.2f}x | {tiles} | {overhead} |"
        )
    print(f"\nlargest difference between the defaults and the model alone: {difference:.2g}\n")

    print("| one pass, base channels | window | estimate MiB | measured MiB | estimate / measured |")
    print("|---|---|---|---|---|")
    for base, shape in ((8, (64, 128, 128)), (16, (64, 128, 128)), (16, (96, 192, 192))):
        peak = measured_peak(shape, base)
        print(
            f"| {base} | {'x'.join(map(str, shape))} | {peak['estimate'] / 2**20:.0f} | "
            f"{peak['measured'] / 2**20:.0f} | {peak['estimate'] / peak['measured']:.2f} |"
        )


if __name__ == "__main__":
    main()
