"""Losses: masked binary cross-entropy of affinities, during training and on validation volumes."""

from __future__ import annotations

import numpy as np
import torch

from neuropil.data.volumes import TrainingVolume
from neuropil.model import UNet3D
from neuropil.predict import predict_affinities


def masked_bce_loss(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, *, balance: bool) -> torch.Tensor:
    """Binary cross-entropy over known affinities only, optionally class-balanced."""
    weights = mask
    if balance:
        known = mask.sum().clamp(min=1.0)
        positive = (target * mask).sum()
        negative = known - positive
        weights = mask * torch.where(
            target > 0.5, known / (2 * positive.clamp(min=1.0)), known / (2 * negative.clamp(min=1.0))
        )
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, weight=weights, reduction="sum")
    return loss / mask.sum().clamp(min=1.0)


def validation_loss(model: UNet3D, volume: TrainingVolume, *, balance: bool = True, device: str = "cpu") -> float:
    """The training loss of the model's whole-volume prediction of ``volume``.

    Predicted in exact tiles (:func:`neuropil.predict.predict_affinities`), so a
    validation band narrower than a training patch is scored too.

    Parameters
    ----------
    model : UNet3D
    volume : TrainingVolume
        At the model's voxel size.
    balance : bool
        Class-balance as in training (:func:`masked_bce_loss`).

    Returns
    -------
    float
        Masked binary cross-entropy over the known affinities (nats per affinity).
    """

    affinities = predict_affinities(volume.raw, model, progress=False, device=device)
    return affinity_loss(affinities, volume, model.config.offsets, balance=balance)


def affinity_loss(affinities: np.ndarray, volume: TrainingVolume, offsets, *, balance: bool) -> float:
    """:func:`masked_bce_loss` of predicted affinities ``(c, z, y, x)`` against ``volume``'s labels."""
    target = volume.targets(offsets)
    logits = torch.logit(torch.from_numpy(np.ascontiguousarray(affinities, dtype=np.float32)), eps=1e-6)
    loss = masked_bce_loss(
        logits, torch.from_numpy(target.affinities), torch.from_numpy(target.mask.astype(np.float32)), balance=balance
    )
    return float(loss.item())
