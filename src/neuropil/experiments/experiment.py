"""The method's experiment on any data: ``neuropil experiment CONFIG``.

What runs is an :class:`neuropil.config.ExperimentConfig`: source domains (catalog
datasets, one's own volumes, synthetic presets) and targets at one target voxel size, and
which models to train (each source alone, all sources, leave-one-out, named subsets,
recipe variants). Each model is trained in ``DIR/models/NAME`` (resumed when stopped,
reused when finished) and predicts every target; the affinities are segmented
(:func:`neuropil.segment.segment`) at every threshold of the grid and scored at the
model's calibrated threshold (chosen on its own validation volumes, what ``neuropil
segment`` uses) and at the best one for the target. Targets labelled in some objects
only are scored on those objects (:func:`neuropil.evaluate.object_errors` lists the
worst); targets without labels get pictures and affinity statistics only.

Besides scores, each model and target gets the fraction of near-zero in-plane
affinities next to the ground truth's fraction of boundary affinities: the study's first
finding (extracellular space drives domain bias) as a number. ``DIR/report/index.html``
(:mod:`neuropil.experiments.report`), ``DIR/report.md`` and ``DIR/results.json`` hold
the results; ``DIR/config.yaml`` what was run; ``DIR/targets.zarr`` (raw and labels) and
``DIR/predictions.zarr`` (each model's affinities) hold the volumes, at the experiment's voxel
size, for ``neuropil view`` (the report gives the command for each target).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from neuropil.checkpoint import load_checkpoint, load_model
from neuropil.config import DatasetDomain, ExperimentConfig, Target, VolumeDomain, build_domains, trainer_from_config
from neuropil.conventions import LabelZero
from neuropil.data.catalog import get_dataset
from neuropil.data.labels import load_training_volume
from neuropil.data.resample import resample
from neuropil.data.synth import synthetic_volume, with_changes
from neuropil.data.volumes import TrainingVolume
from neuropil.errors import NeuropilError
from neuropil.evaluate import Scores, evaluate, object_errors, section_ids
from neuropil.files import write_text_atomic
from neuropil.io import open_volume, write_volume
from neuropil.predict import predict_affinities
from neuropil.segment import segment
from neuropil.train.loss import affinity_loss
from neuropil.visualize import in_plane_affinity, in_plane_target

logger = logging.getLogger(__name__)

NEAR_ZERO = 0.5
"""An in-plane affinity below this counts as a boundary (its objects would be cut apart)."""


@dataclass
class TargetVolume:
    """A target at the experiment's voxel size."""

    name: str
    raw: np.ndarray
    labels: np.ndarray | None
    """Object ids (None: no labels)."""
    coverage: str
    """``dense``, ``some-objects``, ``in-plane`` or ``none``."""
    description: str
    volume: TrainingVolume | None = None
    """Raw and labels as a training volume (for the ground-truth affinities), when labelled."""


@dataclass
class ModelResult:
    """One model on one target."""

    model: str
    target: str
    calibrated_threshold: float | None
    at_calibrated: dict[str, float] | None
    best_threshold: float | None
    at_best: dict[str, float] | None
    near_zero_fraction: float
    """Fraction of in-plane nearest-neighbour affinities below :data:`NEAR_ZERO`."""
    truth_boundary_fraction: float | None
    """Fraction of known in-plane nearest-neighbour ground-truth affinities that are 0."""
    cross_entropy: float | None
    """Masked binary cross-entropy of the affinities against the ground truth (nats per affinity)."""
    segments: int
    """Segments at the calibrated threshold (or 0.5 when the model carries none)."""
    worst: dict[str, Any] | None = None
    """For targets labelled in some objects: the worst splits and merges at the calibrated threshold."""


@dataclass
class ModelInfo:
    """How a model was made."""

    name: str
    sources: tuple[str, ...]
    iterations: int
    minutes: float
    calibrated_threshold: float | None
    changes: dict[str, Any] = field(default_factory=dict)
    """Training settings changed from the experiment's ``train`` (recipe variants)."""
    checkpoint: str = ""


@dataclass
class ExperimentResults:
    models: list[ModelInfo]
    results: list[ModelResult]
    targets: dict[str, dict[str, Any]]
    """Target name -> kind, coverage, shape, description."""
    seconds: float
    pictures: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)
    views: dict[str, list[str]] = field(default_factory=dict)
    """Target -> the addresses that show it in ``neuropil view``: raw, labels, each model's affinities."""
    """Target -> ``raw``, ``truth``, ``known`` and model name -> in-plane affinity of the middle section."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "models": [dataclasses.asdict(m) for m in self.models],
            "targets": self.targets,
            "results": [dataclasses.asdict(r) for r in self.results],
            "views": self.views,
            "seconds": self.seconds,
        }


def _address_exists(address: str) -> bool:
    path = address.split(":", 1)[0] if ".h5" in address or ".hdf" in address else address
    for marker in (".zarr", ".n5"):
        if marker in path:
            path = path[: path.index(marker) + len(marker)]
    return Path(path).exists()


def missing_data(config: ExperimentConfig) -> list[str]:
    """What the experiment needs and this machine lacks or cannot read, one phrase each (empty: all is here)."""
    missing: list[str] = []
    datasets = [d.dataset for d in config.sources.values() if isinstance(d, DatasetDomain)]
    datasets += [t.dataset for t in config.targets.values() if t.dataset is not None]
    for name in dict.fromkeys(datasets):
        entry = get_dataset(name)
        addresses = [a for v in entry.volumes.values() for a in (v.raw, v.labels) if a is not None]
        if not entry.base_folder().exists() or not all(_address_exists(entry.address(a)) for a in addresses):
            missing.append(f"dataset '{name}' (not in {entry.base_folder()}; `neuropil data fetch {name}`)")
    own: list[tuple[str, str | None, str | None]] = [
        (n, d.raw, d.labels) for n, d in config.sources.items() if isinstance(d, VolumeDomain)
    ]
    own += [(n, t.raw, t.labels) for n, t in config.targets.items() if t.raw is not None]
    for name, raw, labels in own:
        for address in (raw, labels):
            if address is None:
                continue
            if not _address_exists(address):
                missing.append(f"'{name}': {address} (no such file)")
                continue
            try:  # present but unreadable (a text file, a wrong key) is as good as missing
                open_volume(address).close()
            except NeuropilError as error:
                missing.append(f"'{name}': {error}")
    return missing


def check(config: ExperimentConfig, where: str = "experiment") -> None:
    """Raise one :class:`NeuropilError` line naming every dataset or volume that is missing."""
    missing = missing_data(config)
    if missing:
        raise NeuropilError(f"{where}: missing {'; '.join(missing)}")


def _centre(array: np.ndarray, shape) -> tuple[slice, ...]:
    if shape is None:
        return tuple(slice(None) for _ in array.shape)
    return tuple(slice(max((s - c) // 2, 0), max((s - c) // 2, 0) + min(c, s)) for s, c in zip(array.shape, shape))


def load_target(name: str, target: Target, config: ExperimentConfig) -> TargetVolume:
    """A target at the experiment's voxel size, cut to its centre ``shape`` when given
    (and labelled in its ``largest_objects`` only, when given)."""
    loaded = _load_target(name, target, config)
    if target.largest_objects is None or loaded.labels is None or loaded.volume is None:
        return loaded
    ids, sizes = np.unique(loaded.labels[loaded.labels > 0], return_counts=True)
    kept = ids[np.argsort(-sizes, kind="stable")[: target.largest_objects]]
    labelled = np.isin(loaded.labels, kept)
    volume = dataclasses.replace(
        loaded.volume,
        labels=np.where(labelled, loaded.labels, 0).astype(loaded.labels.dtype),
        label_zero=LabelZero.UNKNOWN,
    )
    words = f"{loaded.description}, its {len(kept)} largest objects labelled"
    return TargetVolume(name, loaded.raw, volume.labels, "some-objects", words, volume)


def _load_target(name: str, target: Target, config: ExperimentConfig) -> TargetVolume:
    size = config.target_voxel_size
    if target.synthetic is not None:
        domain = with_changes(target.synthetic, **target.changes) if target.changes else target.synthetic
        assert target.shape is not None
        volume = synthetic_volume(domain, shape=target.shape, target_voxel_size=size, seed=target.seed)
        changed = ", ".join(f"{k} {v:g}" for k, v in target.changes.items())
        words = f"synthetic {target.synthetic}" + (f" ({changed})" if changed else "") + f", seed {target.seed}"
        return _labelled(name, volume, "dense", words)
    if target.dataset is not None:
        entry = get_dataset(target.dataset)
        _, volume_entry = entry.volume(target.volume)
        words = f"{entry.modality} {entry.species} {entry.region}".strip() + f", {target.dataset}/{target.volume}"
        if volume_entry.labels is None:
            return _unlabelled(
                name,
                entry.address(volume_entry.raw or ""),
                entry.volume_voxel_size(volume_entry),
                target,
                config,
                words,
            )
        loaded = load_training_volume(entry, target.volume, target_voxel_size=size)
        return _labelled(name, _crop(loaded, target.shape), entry.labels.value, words)
    assert target.raw is not None
    if target.labels_cover == "none":
        return _unlabelled(name, target.raw, target.voxel_size, target, config, f"{target.raw} (no labels)")
    own = VolumeDomain(
        raw=target.raw,
        labels=target.labels or "",
        mask=target.mask,
        voxel_size=target.voxel_size,
        labels_cover=target.labels_cover,
        label_zero=target.label_zero,
    )
    loaded = load_training_volume(own.entry(name, role="test"), target_voxel_size=size)
    return _labelled(name, _crop(loaded, target.shape), str(target.labels_cover), f"{target.raw}")


def _crop(volume: TrainingVolume, shape) -> TrainingVolume:
    region = _centre(volume.raw, shape)
    return volume.crop(region, part="centre") if shape is not None else volume


def _labelled(name: str, volume: TrainingVolume, coverage: str, words: str) -> TargetVolume:
    labels = volume.labels if volume.known is None else np.where(volume.known, volume.labels, 0)
    return TargetVolume(name, volume.raw, labels, coverage, words, volume)


def _unlabelled(name, address, voxel_size, target: Target, config: ExperimentConfig, words: str) -> TargetVolume:
    with open_volume(address, voxel_size=voxel_size) as opened:
        raw = opened.read()
        stored = opened.voxel_size
    if stored is None:
        raise NeuropilError(f"target '{name}': {address}: voxel size unknown; give 'voxel_size: [z, y, x]'")
    raw = resample(raw, voxel_size=stored, target_voxel_size=config.target_voxel_size, kind="image")
    raw = raw[_centre(raw, target.shape)]
    return TargetVolume(name, raw, None, "none", words)


def score_target(segmentation: np.ndarray, target: TargetVolume) -> Scores | None:
    """Scores of one segmentation of ``target`` as its labels allow (None: no labels)."""
    if target.labels is None:
        return None
    if target.coverage == "in-plane":
        return evaluate(section_ids(segmentation), section_ids(target.labels))
    return evaluate(segmentation, target.labels)


def _scores_dict(scores: Scores | None) -> dict[str, float] | None:
    if scores is None:
        return None
    return {"voi_split": scores.voi_split, "voi_merge": scores.voi_merge, "voi": scores.voi, "arand": scores.arand}


def _model_file(folder: Path) -> Path:
    best = folder / "best.pt"
    return best if best.exists() else folder / "checkpoint.pt"


def run_experiment(
    config: ExperimentConfig, out_dir: str | os.PathLike, *, progress: bool = True, report: bool = True
) -> ExperimentResults:
    """Train (or resume, or reuse) every model, predict, segment and score every target; write the report.

    Parameters
    ----------
    config : what to run (its data must be present: :func:`check`)
    out_dir : ``config.yaml``, ``models/NAME/``, ``results.json``, ``report.md`` and ``report/`` go here
    progress : progress bars while training
    report : write ``report.md`` and ``report/index.html`` (``results.json`` always)
    """
    check(config)
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config.save(out_dir / "config.yaml")
    every_source = build_domains(
        config.run_config(next(iter(config.runs()))).model_copy(update={"domains": dict(config.sources)})
    )
    targets = {name: load_target(name, target, config) for name, target in config.targets.items()}
    offsets = config.model.offsets
    infos: list[ModelInfo] = []
    results: list[ModelResult] = []
    pictures: dict[str, dict[str, np.ndarray]] = {}
    # every target and prediction is kept at the experiment's voxel size, to look at in a viewer
    views: dict[str, list[str]] = {}
    for name, target in targets.items():
        views[name] = [f"{out_dir / 'targets.zarr'}/{name}/raw"]
        write_volume(views[name][0], target.raw, voxel_size=config.target_voxel_size)
        if target.labels is not None:
            views[name].append(f"{out_dir / 'targets.zarr'}/{name}/labels")
            write_volume(views[name][-1], target.labels, voxel_size=config.target_voxel_size)
        z = target.raw.shape[0] // 2
        pictures[name] = {"raw": target.raw[z]}
        if target.volume is not None:
            truth = target.volume.targets(offsets)
            pictured, known = in_plane_target(truth.affinities, truth.mask, offsets)
            pictures[name] |= {"truth": pictured[z], "known": known[z]}
    for name, (sources, changes) in config.runs().items():
        folder = out_dir / "models" / name
        run = config.run_config(name)
        trainer = trainer_from_config(
            run,
            folder,
            domains=every_source._replace(
                training={s: every_source.training[s] for s in sources},
                validation={s: every_source.validation[s] for s in sources if s in every_source.validation},
            ),
        )
        logger.info("model %s: sources %s", name, ", ".join(sources))
        trainer.train(progress=progress)
        path = _model_file(folder)
        state = load_checkpoint(path)
        model = load_model(path)
        threshold = state.get("merge_threshold")
        infos.append(
            ModelInfo(
                name=name,
                sources=sources,
                iterations=trainer.iteration,
                minutes=trainer.training_seconds / 60,
                calibrated_threshold=None if threshold is None else float(threshold),
                changes=changes,
                checkpoint=str(path.relative_to(out_dir)),
            )
        )
        for target_name, target in targets.items():
            logger.info("model %s predicts %s %s", name, target_name, target.raw.shape)
            result, affinities = _one(name, model, threshold, target, config)
            results.append(result)
            views[target_name].append(f"{out_dir / 'predictions.zarr'}/{name}/{target_name}")
            write_volume(views[target_name][-1], affinities, voxel_size=config.target_voxel_size)
            pictures[target_name][f"model:{name}"] = in_plane_affinity(affinities, offsets)[target.raw.shape[0] // 2]
    described = {
        name: {
            "kind": config.targets[name].kind,
            "coverage": target.coverage,
            "shape": list(target.raw.shape),
            "description": target.description,
        }
        for name, target in targets.items()
    }
    outcome = ExperimentResults(infos, results, described, time.perf_counter() - started, pictures, views)
    write_text_atomic(out_dir / "results.json", json.dumps(outcome.as_dict(), indent=2))
    if report:
        from neuropil.experiments.report import write_report

        write_report(out_dir, outcome, config)
    return outcome


def _one(name: str, model, threshold, target: TargetVolume, config: ExperimentConfig) -> tuple[ModelResult, np.ndarray]:
    """Model ``name`` on one target: its result and the affinities it predicted."""
    affinities = predict_affinities(target.raw, model, progress=False)
    grid = tuple(config.segment.thresholds)
    chosen = float(threshold) if threshold is not None else 0.5
    thresholds = tuple(sorted(set(grid) | {chosen}))
    options = config.segment.model_dump(exclude={"thresholds"})
    segmented = segment(affinities, voxel_size=config.target_voxel_size, thresholds=thresholds, **options)
    at = {t: s for t, s in zip(segmented.thresholds, segmented.segmentations)}
    scores = {t: score_target(at[t], target) for t in thresholds}
    in_plane = in_plane_affinity(affinities, config.model.offsets)
    truth_fraction = cross_entropy = None
    worst = None
    if target.volume is not None:
        truth = target.volume.targets(config.model.offsets)
        pictured, known = in_plane_target(truth.affinities, truth.mask, config.model.offsets)
        known = known > 0.5
        truth_fraction = float((pictured[known] < 0.5).mean()) if known.any() else None
        cross_entropy = affinity_loss(affinities, target.volume, config.model.offsets, balance=False)
        if target.coverage == "some-objects" and target.labels is not None:
            worst = object_errors(at[chosen], target.labels, top=5).as_dict()
    best = None
    if target.labels is not None:
        best = min(grid, key=lambda t: scores[t].voi)  # type: ignore[union-attr]
    result = ModelResult(
        model=name,
        target=target.name,
        calibrated_threshold=None if threshold is None else chosen,
        at_calibrated=_scores_dict(scores[chosen]) if threshold is not None else None,
        best_threshold=best,
        at_best=None if best is None else _scores_dict(scores[best]),
        near_zero_fraction=float((in_plane < NEAR_ZERO).mean()),
        truth_boundary_fraction=truth_fraction,
        cross_entropy=cross_entropy,
        segments=len(np.unique(at[chosen])),
        worst=worst,
    )
    return result, affinities
