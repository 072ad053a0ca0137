"""Checkpoints: a model's configuration and weights (and a run's training state) in one file, written atomically."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from pydantic import ValidationError

from neuropil.errors import NeuropilError
from neuropil.model import ModelConfig, UNet3D

CHECKPOINT = "checkpoint.pt"


def save_checkpoint(path: Path, state: dict) -> None:
    """Write ``state`` to ``path`` through a temporary file, so a crash never leaves half a checkpoint."""
    temporary = path.with_name(path.name + ".partial")
    try:
        torch.save(state, temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def load_checkpoint(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise NeuropilError(f"{path}: no such checkpoint")
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
        model.load_state_dict(state["model_state"])
    except (ValidationError, RuntimeError) as error:
        raise NeuropilError(f"{path}: checkpoint does not match the model ({str(error).splitlines()[0]})") from error
    return model.to(device).eval()
