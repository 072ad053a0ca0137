"""Checkpoints: a model's configuration and weights (and a run's training state) in one file, written atomically.

A shipped pretrained model (:func:`shipped_models`, ``neuropil models``) is a checkpoint
exported without its training state (:func:`export_model`); its name works wherever a
checkpoint's path does (:func:`resolve_checkpoint`).
"""

from __future__ import annotations

import io
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
    """Write ``state`` to ``path`` through a temporary file, so a crash never leaves half a checkpoint.

    The state is serialised in memory, then written and flushed to disk with ordinary file
    writes: a full disk raises ``OSError`` (``ENOSPC``, naming ``path``), not the message of
    torch's own writer, and after any failure the temporary file is gone and an earlier
    file at ``path`` is as it was.
    """
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    temporary = path.with_name(path.name + ".partial")
    try:
        with open(temporary, "wb") as file:
            file.write(buffer.getbuffer())
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError as error:
        if error.filename is None:
            error.filename = str(path)
        raise
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
    _check_fields(path, state)
    # checkpoints written before the normalization option existed hold networks without any
    state["model_config"] = {"normalization": "none", **state["model_config"]}
    return state


def _check_fields(path: Path, state: dict) -> None:
    """A one-line error for a checkpoint whose fields are missing or of the wrong kind."""
    config, weights = state["model_config"], state["model_state"]
    if not isinstance(config, dict):
        raise NeuropilError(f"{path}: model_config is a {type(config).__name__}, not a mapping")
    if "voxel_size" not in config:
        # without it the network would be applied at a guessed scale, which fails quietly
        raise NeuropilError(f"{path}: model_config has no voxel_size")
    if not isinstance(weights, dict) or not all(isinstance(t, torch.Tensor) for t in weights.values()):
        raise NeuropilError(f"{path}: model_state is not a mapping of tensors")
    threshold = state.get("merge_threshold")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))):
        raise NeuropilError(f"{path}: merge_threshold is {threshold!r}, not a number")
    if threshold is not None and not 0.0 <= float(threshold) <= 1.0:
        raise NeuropilError(f"{path}: merge_threshold {threshold} lies outside [0, 1]")
    iteration = state.get("iteration", 0)
    if isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < 0:
        raise NeuropilError(f"{path}: iteration is {iteration!r}, not a count")


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
