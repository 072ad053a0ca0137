"""What a dataset's files say: shape, dtype, voxel size, chunks and label ids, next to what the catalog says."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from neuropil.data.catalog import DatasetEntry
from neuropil.data.labels import load_labels
from neuropil.errors import NeuropilError
from neuropil.io import open_volume, parse_address, read_volume

CATALOG_SOURCE = "the catalog"
"""The ``voxel_size_source`` of a voxel size that the catalog gives."""


def _label_count(array: NDArray) -> int:
    """Number of distinct non-zero ids."""
    values = np.unique(array)
    return int(np.count_nonzero(values))


def address_info(
    address: str, *, count_labels: bool = True, voxel_size: Sequence[float] | None = None
) -> dict[str, Any]:
    """Shape, dtype, voxel size, chunks and (integer arrays) the number of non-zero ids of an address.

    ``voxel_size`` (nm, ``(z, y, x)``) is used when the file stores none. ``voxel_size_source``
    and ``offset_source`` say where each came from (:attr:`neuropil.io.Volume.voxel_size_source`).
    """
    with open_volume(address, voxel_size=voxel_size) as volume:
        info: dict[str, Any] = {
            "address": str(volume.address),
            "shape": list(volume.shape),
            "dtype": str(volume.dtype),
            "voxel_size": list(volume.voxel_size) if volume.voxel_size else None,
            "voxel_size_source": volume.voxel_size_source if volume.voxel_size else None,
            "chunks": list(volume.chunks) if volume.chunks else None,
        }
        if volume.offset:
            info["offset"] = list(volume.offset)
            info["offset_source"] = volume.offset_source
        if count_labels and (np.issubdtype(volume.dtype, np.integer) or volume.dtype == bool):
            info["label_ids"] = _label_count(volume.read())
    return info


def dataset_info(dataset: DatasetEntry, *, count_labels: bool = True) -> dict[str, Any]:
    """Everything the catalog says about ``dataset`` plus what its files say (shape, dtype, ids).

    Volumes whose files are absent are reported with ``"present": false``.
    """
    info: dict[str, Any] = {
        "name": dataset.name,
        "title": dataset.title,
        "modality": dataset.modality,
        "species": dataset.species,
        "region": dataset.region,
        "voxel_size": list(dataset.voxel_size),
        "voxel_size_source": CATALOG_SOURCE,
        "labels": dataset.labels.value,
        "label_zero": dataset.label_zero.value,
        "classes": dataset.classes.model_dump() if dataset.classes else None,
        "license": dataset.license,
        "source": dataset.source,
        "notes": dataset.notes,
        "validation_width": dataset.validation_width,
        "folder": str(dataset.base_folder()),
        "volumes": {},
    }
    for name, volume in dataset.volumes.items():
        entry: dict[str, Any] = {"role": volume.role}
        for kind in ("raw", "labels", "mask", *sorted(volume.extra)):
            relative = getattr(volume, kind) if kind in ("raw", "labels", "mask") else volume.extra[kind]
            if relative is None:
                continue
            address = dataset.address(relative)
            if not parse_address(address).path.exists():
                entry[kind] = {"address": address, "present": False}
                continue
            count = count_labels and kind in ("labels", "fragments")
            try:
                facts = address_info(address, count_labels=count)
            except NeuropilError as error:
                entry[kind] = {"address": address, "present": True, "error": str(error)}
                continue
            facts["present"] = True
            if facts["voxel_size"] is None:
                facts["voxel_size"] = list(dataset.volume_voxel_size(volume))
                facts["voxel_size_source"] = f"{CATALOG_SOURCE}; the file stores none"
                facts["voxel_size_from"] = "catalog"
            else:
                facts["voxel_size_from"] = "file"
            entry[kind] = facts
        present = entry.get("labels", {}).get("present")
        if count_labels and dataset.classes is not None and volume.labels is not None and present:
            labels, _ = load_labels(dataset, volume)
            # Semantic codes are classes, 0 among them: list them all rather than count non-zero ids.
            entry["labels"].pop("label_ids", None)
            codes = np.unique(read_volume(dataset.address(volume.labels)))
            entry["labels"]["codes"] = [int(code) for code in codes]
            entry["labels"]["objects"] = _label_count(labels)
            entry["labels"]["objects_are"] = "2-D instances (connected interior per section)"
        info["volumes"][name] = entry
    return info
