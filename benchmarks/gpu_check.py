"""Training and inference speed of the method's U-Net on a GPU: iterations/s, peak memory, inference Mvox/s.

The method's network (depth 4, 64x128x128 input, binary cross-entropy, Adam) trained for a
few hundred iterations on random patches with channels-last memory and, where the GPU has
it, bfloat16 autocast; then prediction of a 64x512x512 volume: ``predict_affinities`` at its
defaults (tiles from the GPU's free memory) and the model alone (one pass, float32 and bfloat16).
Prints one table. Run it through ``benchmarks/gpu_check.sh`` (under 10 minutes on one
GPU); ``--device cpu --iterations 3 --volume 16 64 64`` checks the script itself here.
"""

from __future__ import annotations

import argparse
import functools
import time

import numpy as np
import torch

from neuropil.conventions import METHOD_VOXEL_SIZE
from neuropil.model import ModelConfig, UNet3D
from neuropil.predict import predict_affinities, round_up
from neuropil.train.loss import masked_bce_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--patch", type=int, nargs=3, default=(64, 128, 128), metavar=("Z", "Y", "X"))
    parser.add_argument("--volume", type=int, nargs=3, default=(64, 512, 512), metavar=("Z", "Y", "X"))
    parser.add_argument("--base-channels", type=int, default=16, help="16: the shipped generalist's width")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device here (torch.cuda.is_available() is False); use --device cpu")
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    bf16 = cuda and torch.cuda.is_bf16_supported()
    torch.manual_seed(0)
    model = UNet3D(ModelConfig(base_channels=args.base_channels, depth=4, voxel_size=METHOD_VOXEL_SIZE))
    model = model.to(device).to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4)
    rng = np.random.default_rng(0)
    shape = (args.batch_size, 1, *args.patch)
    raw = torch.from_numpy(rng.random(shape, dtype=np.float32)).to(device)
    raw = raw.contiguous(memory_format=torch.channels_last_3d)
    target = torch.from_numpy((rng.random((args.batch_size, 3, *args.patch)) > 0.3).astype(np.float32)).to(device)
    mask = torch.ones_like(target)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(raw)
        loss = masked_bce_loss(logits.float(), target, mask, balance=True)
        loss.backward()
        optimizer.step()

    warmup = min(10, args.iterations)
    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    for _ in range(args.iterations):
        step()
    if cuda:
        torch.cuda.synchronize(device)
    train_seconds = time.perf_counter() - started
    train_peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else float("nan")

    model.eval()
    volume = rng.integers(0, 255, size=tuple(args.volume), dtype=np.uint8)
    rows = [("predict, defaults", lambda: predict_affinities(volume, model, device=device, progress=False))]
    padded = [round_up(n, d) for n, d in zip(args.volume, model.divisor)]
    tensor = torch.from_numpy(rng.random((1, 1, *padded), dtype=np.float32)).to(device)
    for precision in ("float32", "bfloat16") if bf16 else ("float32",):
        rows.append((f"model alone, {precision}", functools.partial(alone, model, tensor, precision == "bfloat16")))
    results = []
    for name, call in rows:
        call()  # warm-up (cuDNN's algorithm search)
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        started = time.perf_counter()
        call()
        if cuda:
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - started
        results.append((name, seconds, torch.cuda.max_memory_allocated(device) / 2**20 if cuda else float("nan")))

    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    print(f"device: {name}; torch {torch.__version__}; bf16 autocast: {bf16}; channels-last 3-D")
    print("| stage | input | iterations | s | it/s | Mvox/s | peak GPU MB |")
    print("|---|---|---|---|---|---|---|")
    patch_voxels = args.batch_size * int(np.prod(args.patch))
    print(
        f"| train | {args.batch_size}x{'x'.join(map(str, args.patch))} | {args.iterations} | {train_seconds:.1f} "
        f"| {args.iterations / train_seconds:.2f} | {patch_voxels * args.iterations / train_seconds / 1e6:.2f} "
        f"| {train_peak:.0f} |"
    )
    for stage, seconds, peak in results:
        print(
            f"| {stage} | {'x'.join(map(str, args.volume))} | - | {seconds:.2f} | - "
            f"| {int(np.prod(args.volume)) / seconds / 1e6:.2f} | {peak:.0f} |"
        )


def alone(model: UNet3D, tensor: torch.Tensor, bf16: bool) -> None:
    """One forward pass over the whole (padded) volume, channels-last, optionally under bfloat16 autocast."""
    with torch.inference_mode(), torch.autocast(device_type=tensor.device.type, dtype=torch.bfloat16, enabled=bf16):
        torch.sigmoid(model(tensor.contiguous(memory_format=torch.channels_last_3d))).float().cpu()


if __name__ == "__main__":
    main()
