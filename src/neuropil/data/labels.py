"""From a catalog volume's stored labels to training labels and the voxels they are known at.

Three kinds of supervision (:class:`neuropil.data.catalog.LabelCoverage`) become one
:class:`neuropil.data.volumes.TrainingVolume` each:

``dense``
    3-D ids as stored (as uint64); 0 means what the dataset's ``label_zero`` says.
``in-plane``
    Semantic codes per section (ISBI 2012: 255 interior, 0 membrane; Gerhard et al.
    2013: membrane, glia/extracellular, mitochondria, synapse, intracellular). Instances
    are the 4-connected components of the ``interior`` codes in each section; ``boundary``
    codes become 0; ``unknown`` codes (and codes the catalog does not name) are masked.
    ``in_plane_only`` is set, so affinities across sections are masked.
``some-objects``
    Only some objects carry ids; 0 is unknown, so affinities touching unlabelled voxels are
    masked (``label_zero = unknown``) in the loss and in metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from neuropil.conventions import LABEL_DTYPE, LabelZero
from neuropil.data.catalog import DatasetEntry, LabelCoverage, VolumeEntry, get_dataset
from neuropil.data.resample import resample
from neuropil.data.sampling import VALIDATION_WIDTH, split_validation_band
from neuropil.data.volumes import TrainingVolume
from neuropil.errors import NeuropilError
from neuropil.io import open_volume

logger = logging.getLogger(__name__)


def instances_from_semantic(
    codes: NDArray,
    *,
    interior: Sequence[int],
    boundary: Sequence[int] = (),
    unknown: Sequence[int] = (),
) -> tuple[NDArray[np.uint64], NDArray[np.bool_]]:
    """2-D instance labels from per-section semantic codes.

    Parameters
    ----------
    codes : (z, y, x) or (y, x) ndarray of int
        Semantic class code per voxel.
    interior, boundary, unknown : sequences of int
        Codes of object interiors (become instances), of boundaries and other
        non-objects (become 0), and of voxels whose class is unknown (masked). Codes in
        none of the three are treated as unknown.

    Returns
    -------
    labels : ndarray of uint64, shape of ``codes``
        4-connected components of ``interior`` in each section, ids 1..n unique over
        the whole volume (no id spans two sections).
    known : ndarray of bool, shape of ``codes``
        False where the code is unknown.
    """
    import cc3d

    codes = np.asarray(codes)
    if not (np.issubdtype(codes.dtype, np.integer) or codes.dtype == bool):
        raise NeuropilError(f"semantic labels must be integers, got {codes.dtype}")
    volume = codes if codes.ndim == 3 else codes[np.newaxis]
    is_interior = np.isin(volume, np.asarray(interior))
    named = np.isin(volume, np.asarray([*interior, *boundary, *unknown]))
    known = named & ~np.isin(volume, np.asarray(list(unknown)))
    if not named.all():
        stray = np.unique(volume[~named])
        logger.warning("semantic codes %s are not named by the catalog; their voxels are masked", stray[:10].tolist())
    labels = np.zeros(volume.shape, dtype=LABEL_DTYPE)
    next_id = 0
    for z in range(volume.shape[0]):
        components, count = cc3d.connected_components(is_interior[z], connectivity=4, return_N=True)
        section = components.astype(LABEL_DTYPE)
        section[section > 0] += next_id
        labels[z] = section
        next_id += int(count)
    if codes.ndim != 3:
        return labels[0], known[0]
    return labels, known


def load_labels(dataset: DatasetEntry, volume: VolumeEntry) -> tuple[NDArray[np.uint64], NDArray[np.bool_] | None]:
    """A catalog volume's labels as uint64 ids plus the voxels where they are known (None: all)."""

    address = dataset.address(volume.labels)
    if address is None:
        raise NeuropilError(f"dataset '{dataset.name}': volume has no labels")
    with open_volume(address) as opened:
        stored = opened.read()
    if not (np.issubdtype(stored.dtype, np.integer) or stored.dtype == bool):
        raise NeuropilError(f"{address}: labels must be integers, got {stored.dtype}")
    if stored.size == 0:
        raise NeuropilError(f"{address}: empty volume")
    if dataset.classes is not None:
        instances, classified = instances_from_semantic(
            stored,
            interior=dataset.classes.interior,
            boundary=dataset.classes.boundary,
            unknown=dataset.classes.unknown,
        )
        return instances, (None if classified.all() else classified)
    if np.issubdtype(stored.dtype, np.signedinteger) and stored.min() < 0:
        raise NeuropilError(f"{address}: labels hold negative ids (min {stored.min()})")
    labels = stored.astype(LABEL_DTYPE, copy=False)
    known: NDArray[np.bool_] | None = None
    if dataset.unknown_ids_at_least is not None:
        unlabelled = labels >= np.uint64(dataset.unknown_ids_at_least)
        if unlabelled.any():
            known = ~unlabelled
            labels = np.where(unlabelled, 0, labels).astype(LABEL_DTYPE)
    return labels, known


def load_training_volume(
    dataset: str | DatasetEntry,
    volume: str | None = None,
    *,
    target_voxel_size: Sequence[float] | None = None,
) -> TrainingVolume:
    """A catalog volume as raw, labels and the policy for its affinity mask, ready for training.

    Parameters
    ----------
    dataset : str or DatasetEntry
        Catalog name (e.g. ``"fib-gala"``) or entry.
    volume : str, optional
        Volume name within the dataset (the first one when None).
    target_voxel_size : (z, y, x) nm, optional
        Rescale raw (anti-aliased), labels (nearest) and the known-voxel mask
        (conservative) to this voxel size.

    Returns
    -------
    neuropil.data.volumes.TrainingVolume
        ``raw`` (z, y, x) as stored (uint8 for every shipped set), ``labels`` uint64,
        ``label_zero``, ``in_plane_only`` and ``known`` (bool or None): together they
        say which affinities are known (see :func:`neuropil.targets.affinities_from_labels`).

    Raises
    ------
    NeuropilError
        A missing raw image or labels, raw/labels shape or voxel-size mismatch, float
        labels, an empty volume, or a shape other than the catalog's.
    """

    entry = get_dataset(dataset) if isinstance(dataset, str) else dataset
    name, volume_entry = entry.volume(volume)
    where = f"{entry.name}/{name}"
    if volume_entry.raw is None:
        raise NeuropilError(f"{where}: has no raw image (labels only); it cannot be used for training")
    if volume_entry.labels is None:
        raise NeuropilError(f"{where}: has no labels; it cannot be used for training")
    voxel_size = entry.volume_voxel_size(volume_entry)
    raw_address = entry.address(volume_entry.raw)
    labels_address = entry.address(volume_entry.labels)
    with open_volume(raw_address) as opened:
        raw_voxel_size = opened.voxel_size
        raw = opened.read()
    with open_volume(labels_address) as opened:
        labels_voxel_size = opened.voxel_size
    for address, stored in ((raw_address, raw_voxel_size), (labels_address, labels_voxel_size)):
        if stored is not None and not np.allclose(stored, voxel_size, rtol=1e-3):
            raise NeuropilError(
                f"{address}: voxel size mismatch: the file says {stored} nm, the catalog {voxel_size} nm"
            )
    if raw.size == 0:
        raise NeuropilError(f"{raw_address}: empty volume")
    labels, known = load_labels(entry, volume_entry)
    if raw.shape != labels.shape:
        raise NeuropilError(
            f"{where}: raw {raw_address} has shape {raw.shape} but labels {labels_address} have {labels.shape}"
        )
    if volume_entry.shape is not None and tuple(raw.shape) != volume_entry.shape:
        raise NeuropilError(f"{raw_address}: shape {raw.shape}, the catalog expects {volume_entry.shape}")
    if volume_entry.mask is not None:
        mask_address = entry.address(volume_entry.mask)
        with open_volume(mask_address) as opened:
            mask = opened.read() != 0
        if mask.shape != labels.shape:
            raise NeuropilError(f"{mask_address}: mask shape {mask.shape} does not match labels {labels.shape}")
        known = mask if known is None else known & mask
    label_zero = entry.label_zero
    if entry.labels is LabelCoverage.SOME_OBJECTS:
        label_zero = LabelZero.UNKNOWN
    if target_voxel_size is not None:
        target = _voxel_size_triple(target_voxel_size)
        raw = resample(raw, voxel_size=voxel_size, target_voxel_size=target, kind="image")
        labels = resample(labels, voxel_size=voxel_size, target_voxel_size=target, kind="labels")
        if known is not None:
            known = resample(known, voxel_size=voxel_size, target_voxel_size=target, kind="mask")
        voxel_size = target
    return TrainingVolume(
        raw=raw,
        labels=labels,
        voxel_size=voxel_size,
        label_zero=label_zero,
        in_plane_only=entry.labels is LabelCoverage.IN_PLANE,
        known=known,
        name=where,
        metadata={"dataset": entry.name, "volume": name, "modality": entry.modality, "role": volume_entry.role},
    )


def _voxel_size_triple(values: Sequence[float]) -> tuple[float, float, float]:
    """``values`` as three nanometre sizes ``(z, y, x)``; any other count raises."""
    sizes = tuple(float(v) for v in values)
    if len(sizes) != 3:
        raise NeuropilError(f"target voxel size needs 3 values (z, y, x nm), got {sizes}")
    return sizes


def catalog_domains(
    datasets: Sequence[str | DatasetEntry],
    *,
    target_voxel_size: Sequence[float],
    validation_width: int | None = None,
    patch_shape: Sequence[int] | None = None,
) -> tuple[dict[str, list[TrainingVolume]], dict[str, list[TrainingVolume]]]:
    """Training and validation domains from catalog datasets (names or entries), one domain per dataset.

    Every ``train``-role volume is loaded at ``target_voxel_size`` and cut by
    :func:`split_validation_band`; ``test``-role volumes are left out. Parts smaller
    than ``patch_shape`` are dropped with a warning; a dataset left with no training
    part raises.

    The band is ``validation_width`` voxels wide when given, else the catalog entry's
    ``validation_width``, else the method's 150 (:data:`VALIDATION_WIDTH`). The small
    shared sets set their own (isbi2012 is only 158 voxels wide at 13 nm).

    Returns
    -------
    (training, validation) : dicts of domain name to volumes, ready for
    :class:`MultiDomainSampler` (synthetic domains can be added to the same dicts).
    """
    training: dict[str, list[TrainingVolume]] = {}
    validation: dict[str, list[TrainingVolume]] = {}
    for dataset in datasets:
        entry = get_dataset(dataset) if isinstance(dataset, str) else dataset
        name = entry.name
        width = validation_width if validation_width is not None else entry.validation_width
        width = VALIDATION_WIDTH if width is None else width
        usable = {n: v for n, v in entry.volumes.items() if v.role == "train" and v.raw and v.labels}
        if not usable:
            # Say so, rather than blame the validation band for a dataset that cannot train at all.
            raise NeuropilError(f"dataset '{name}' has no train volume with both a raw image and labels")
        for volume_name in usable:
            loaded = load_training_volume(entry, volume_name, target_voxel_size=target_voxel_size)
            train_part, validation_part = split_validation_band(loaded, width=width)
            for part, into in ((train_part, training), (validation_part, validation)):
                if part is None:
                    continue
                # Validation is predicted whole (padded), so only training parts must hold a patch.
                if (
                    into is training
                    and patch_shape is not None
                    and any(s < p for s, p in zip(part.raw.shape, patch_shape))
                ):
                    logger.warning(
                        "%s: shape %s is smaller than the patch %s; left out",
                        part.name,
                        part.raw.shape,
                        tuple(patch_shape),
                    )
                    continue
                into.setdefault(name, []).append(part)
        if name not in training:
            raise NeuropilError(
                f"dataset '{name}' has no training data left at {tuple(target_voxel_size)} nm beside a "
                f"{width}-voxel validation band"
            )
    return training, validation
