"""What a pretrained model is: its voxel size, channels, training data and their licences, recipe and calibration.

Everything is read from the model file itself (the run configuration a checkpoint carries)
and from the dataset catalog (licences), so a description cannot drift from the weights.
``neuropil models`` prints :func:`describe` for every shipped model
(:func:`neuropil.checkpoint.shipped_models`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from neuropil.checkpoint import load_checkpoint, resolve_checkpoint
from neuropil.data.catalog import load_catalog

SYNTHETIC_LICENCE = "synthetic (made by neuropil, BSD-3-Clause)"
NON_COMMERCIAL = ("non-commercial", "noncommercial", "by-nc")


def _training_data(run_config: dict) -> list[dict[str, str]]:
    catalog = load_catalog()
    data = []
    for name, domain in (run_config.get("domains") or {}).items():
        if domain.get("synthetic"):
            data.append(
                {"domain": name, "source": f"synthetic preset {domain['synthetic']}", "licence": SYNTHETIC_LICENCE}
            )
        else:
            dataset = domain.get("dataset") or name
            entry = catalog.get(dataset)
            licence = entry.license if entry is not None and entry.license else "unknown (not in this catalog)"
            data.append({"domain": name, "source": f"dataset {dataset}", "licence": licence})
    return data


def _recipe(train: dict) -> str:
    augment = train.get("augment") or {}
    applied = sorted(name for name, settings in augment.items() if float(settings.get("probability", 0)) > 0)
    gaps = {"open_gaps", "close_gaps"} & set(applied)
    words = []
    if not applied:
        words.append("no augmentation")
    else:
        em = len(set(applied) - gaps)
        words.append(f"EM augmentation ({em} kinds)" if em else "no EM augmentation")
        if gaps:
            words.append("extracellular-space augmentation (" + ", ".join(sorted(gaps)) + ")")
    words.append(f"patch {'x'.join(str(v) for v in train.get('patch_shape', ()))}")
    words.append(f"batch {train.get('batch_size')}")
    words.append(f"learning rate {train.get('learning_rate')}")
    return "; ".join(words)


def describe(checkpoint: str | os.PathLike) -> dict[str, Any]:
    """Facts about a model file or shipped model, as plain values (JSON-ready).

    Keys: ``name``, ``file``, ``voxel_size`` (z, y, x nm), ``offsets``, ``channels``,
    ``base_channels``, ``depth``, ``iterations``, ``merge_threshold`` (None when not
    calibrated), ``training_data`` (domain, source, licence each), ``non_commercial``
    (whether any training data is licensed for non-commercial use only, which its weights
    inherit), ``recipe`` (augmentation and optimisation in words), ``description``.
    """
    path = resolve_checkpoint(checkpoint)
    state = load_checkpoint(path)
    model = state["model_config"]
    run_config = state.get("run_config") or {}
    train = run_config.get("train") or state.get("train_config") or {}
    data = _training_data(run_config)
    threshold = state.get("merge_threshold")
    return {
        "name": Path(path).stem if Path(path).name != "checkpoint.pt" else Path(path).parent.name,
        "file": str(path),
        "voxel_size": [float(v) for v in model["voxel_size"]],
        "offsets": [list(offset) for offset in model.get("offsets", [])],
        "channels": len(model.get("offsets", [])),
        "base_channels": model.get("base_channels"),
        "depth": model.get("depth"),
        "iterations": int(state.get("iteration", 0)),
        "merge_threshold": None if threshold is None else float(threshold),
        "training_data": data,
        "non_commercial": any(word in item["licence"].lower() for item in data for word in NON_COMMERCIAL),
        "recipe": _recipe(train),
        "description": str(state.get("description", "")),
    }
