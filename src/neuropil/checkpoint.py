"""Checkpoints: a model's configuration and weights (and a run's training state) in one file, written atomically.

A shipped pretrained model (:func:`shipped_models`, ``neuropil models``) is a checkpoint
exported without its training state (:func:`export_model`); its name works wherever a
checkpoint's path does (:func:`resolve_checkpoint`).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from pydantic import ValidationError

from neuropil.errors import NeuropilError
from neuropil.model import ModelConfig, UNet3D

CHECKPOINT = "checkpoint.pt"
SHIPPED = Path(__file__).parent / "models"
"""Pretrained models that come with the package, ``<name>.pt`` each."""
EXPORTED_KEYS = ("model_config", "model_state", "merge_threshold", "iteration", "best_voi", "training_seconds")
"""What an exported model keeps of a checkpoint (with its ``run_config`` or ``train_config``): no optimizer."""


def shipped_models() -> dict[str, Path]:
    """Name -> file of every pretrained model shipped with the package."""
    return {path.stem: path for path in sorted(SHIPPED.glob("*.pt"))}


def resolve_checkpoint(checkpoint: str | os.PathLike) -> Path:
    """The file of ``checkpoint``: a path, or the name of a shipped model (a file of that name wins)."""
    path = Path(checkpoint)
    if path.is_file():
        return path
    models = shipped_models()
    if str(checkpoint) in models:
        return models[str(checkpoint)]
    names = ", ".join(models) or "none"
    raise NeuropilError(f"{path}: no such checkpoint, nor the name of a shipped model ({names}; see `neuropil models`)")


def export_model(checkpoint: str | os.PathLike, out: str | os.PathLike, *, description: str = "") -> Path:
    """Write ``checkpoint``'s model for others to use: weights as float16, no optimizer or random states.

    A third of a training checkpoint's size (Adam keeps two moments per weight) and half
    again for the float16 weights, which :func:`load_model` turns back into float32
    (predictions differ from the original's by float16's rounding of the weights, about
    1e-3 relative). The configurations, iteration, calibrated merge threshold and best
    validation VOI are kept, and ``description`` added.
    """
    state = load_checkpoint(checkpoint)
    exported = {key: state[key] for key in EXPORTED_KEYS if key in state}
    exported["model_state"] = {
        name: tensor.half() if tensor.is_floating_point() else tensor for name, tensor in state["model_state"].items()
    }
    for key in ("run_config", "train_config"):
        if key in state:
            exported[key] = state[key]
            break
    exported["description"] = description
    out = Path(out)
    save_checkpoint(out, exported)
    return out


def save_checkpoint(path: Path, state: dict) -> None:
    """Write ``state`` to ``path`` through a temporary file, so a crash never leaves half a checkpoint."""
    temporary = path.with_name(path.name + ".partial")
    try:
        torch.save(state, temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """The state in a checkpoint file or shipped model (:func:`resolve_checkpoint`), on the CPU."""
    path = resolve_checkpoint(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged file
        raise NeuropilError(f"{path}: not a readable checkpoint ({type(error).__name__})") from error
    if not isinstance(state, dict) or "model_config" not in state or "model_state" not in state:
        raise NeuropilError(f"{path}: not a neuropil checkpoint (no model_config/model_state)")
    # checkpoints written before the normalization option existed hold networks without any
    state["model_config"] = {"normalization": "none", **state["model_config"]}
    return state


def merge_threshold(path: str | os.PathLike) -> float | None:
    """The merge threshold calibrated on the run's validation volumes, or None (no validation, or an older checkpoint).

    Chosen by :class:`neuropil.train.Trainer` at the checkpoint: the threshold of
    mean-affinity agglomeration with the lowest mean VOI over the validation volumes.
    """
    threshold = load_checkpoint(path).get("merge_threshold")
    return None if threshold is None else float(threshold)


def load_model(path: str | os.PathLike, *, device: str = "cpu") -> UNet3D:
    """The trained model stored in a checkpoint, in eval mode."""
    state = load_checkpoint(path)
    try:
        model = UNet3D(ModelConfig(**state["model_config"]))
        model.load_state_dict(state["model_state"])  # copies into float32 weights, float16 ones too
    except (ValidationError, RuntimeError) as error:
        raise NeuropilError(f"{path}: checkpoint does not match the model ({str(error).splitlines()[0]})") from error
    return model.to(device).eval()
