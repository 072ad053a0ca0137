"""The synthetic multi-domain demo: the whole method on a laptop, in minutes.

Several synthetic EM domains (differing in voxel size, extracellular space, membranes,
texture, organelles and noise) are generated at their own voxel sizes and rescaled to
one target voxel size, as the method rescales SNEMI3D, CREMI and FIB-25. One U-Net is
trained on all training domains (domain picked uniformly per sample), then held-out
volumes of every domain and of an unseen domain are predicted, segmented (watershed
fragments + mean-affinity agglomeration) and scored, next to the same pipeline run on
the untrained network's output.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

from neuropil.data.synth import PRESETS, synthetic_volume
from neuropil.errors import NeuropilError
from neuropil.evaluate import Scores, evaluate
from neuropil.files import write_text_atomic
from neuropil.model import ModelConfig, UNet3D
from neuropil.predict import predict_affinities
from neuropil.segment import agglomerate
from neuropil.segment.watershed import fragments
from neuropil.targets import affinities_from_labels
from neuropil.train import TrainConfig, Trainer
from neuropil.visualize import figure_slice

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoSettings:
    train_domains: tuple[str, ...] = ("cremi-like", "snemi-like", "fib-like")
    unseen_domain: str = "cryo-ecs"
    target_voxel_size: tuple[float, float, float] = (25.0, 13.0, 13.0)
    """The method's target voxel size, nm (z, y, x)."""
    train_shape: tuple[int, int, int] = (32, 128, 128)
    volumes_per_domain: int = 2
    test_shape: tuple[int, int, int] = (32, 128, 128)
    thresholds: tuple[float, ...] = tuple(np.round(np.arange(0.05, 1.0, 0.05), 2))
    model: ModelConfig = field(
        default_factory=lambda: ModelConfig(base_channels=8, voxel_size=(25.0, 13.0, 13.0), normalization="batch")
    )
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(iterations=2000, patch_shape=(16, 64, 64), learning_rate=1e-3)
    )


FULL = DemoSettings()
QUICK = DemoSettings(
    train_shape=(16, 48, 48),
    volumes_per_domain=1,
    test_shape=(16, 48, 48),
    thresholds=(0.2, 0.4, 0.6, 0.8),
    model=ModelConfig(base_channels=8, depth=3, voxel_size=(25.0, 13.0, 13.0), normalization="batch"),
    train=TrainConfig(iterations=400, patch_shape=(8, 32, 32), checkpoint_every=100, learning_rate=3e-3),
)


@dataclass(frozen=True)
class DomainResult:
    domain: str
    role: str
    """``train`` (held-out volume of a training domain) or ``unseen``."""
    trained: Scores
    untrained: Scores
    figure: str
    threshold: float
    """Agglomeration threshold used for ``trained``."""


def segment_thresholds(affinities: NDArray, thresholds, *, voxel_size) -> list[NDArray[np.uint64]]:
    """Watershed fragments, then mean-affinity agglomeration at each threshold (one run)."""
    pieces, _ = fragments(affinities, voxel_size=voxel_size)
    return agglomerate(affinities, pieces, method="mean", thresholds=thresholds)


def best_threshold(results: list[list[Scores]], thresholds) -> float:
    """The threshold with the lowest mean VOI (split + merge) over volumes."""
    mean_voi = np.mean([[s.voi for s in per_volume] for per_volume in results], axis=0)
    return float(thresholds[int(np.argmin(mean_voi))])


def run_demo(
    out_dir: str | os.PathLike, *, quick: bool = False, seed: int = 0, progress: bool = True
) -> list[DomainResult]:
    """Run the demo and write ``report.md``, ``results.json`` and one PNG per domain to ``out_dir``."""
    settings = QUICK if quick else FULL
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    target = settings.target_voxel_size
    domains = (*settings.train_domains, settings.unseen_domain)
    unknown = [d for d in domains if d not in PRESETS]
    if unknown:
        raise NeuropilError(f"unknown synthetic domains {unknown}; presets are {sorted(PRESETS)}")

    logger.info("generating %d domains at %s nm", len(domains), target)
    training = {
        name: [
            synthetic_volume(name, shape=settings.train_shape, target_voxel_size=target, seed=seed * 1000 + 10 * i + d)
            for i in range(settings.volumes_per_domain)
        ]
        for d, name in enumerate(settings.train_domains)
    }
    validation = {
        name: synthetic_volume(name, shape=settings.test_shape, target_voxel_size=target, seed=seed * 1000 + 500 + d)
        for d, name in enumerate(settings.train_domains)
    }
    tests = {
        name: synthetic_volume(name, shape=settings.test_shape, target_voxel_size=target, seed=seed * 1000 + 900 + d)
        for d, name in enumerate(domains)
    }

    torch.manual_seed(seed)
    untrained = UNet3D(settings.model).eval()
    # the seed also sets the network's initial weights and the order of training patches
    train_config = settings.train.model_copy(update={"seed": seed})
    trainer = Trainer(training, out_dir=out_dir / "model", model_config=settings.model, train_config=train_config)
    train_started = time.perf_counter()
    model = trainer.train(progress=progress)
    train_seconds = time.perf_counter() - train_started

    def predict(network, volume):
        return predict_affinities(volume.raw, network, progress=False)

    def scores_per_threshold(affinities, volume):
        return [
            evaluate(seg, volume.labels)
            for seg in segment_thresholds(affinities, settings.thresholds, voxel_size=target)
        ]

    # A lab tunes the agglomeration threshold on the labelled validation data of each
    # dataset; a domain without labels gets the one that is best over all of them.
    validation_scores = {name: scores_per_threshold(predict(model, v), v) for name, v in validation.items()}
    thresholds = {name: best_threshold([scores], settings.thresholds) for name, scores in validation_scores.items()}
    thresholds[settings.unseen_domain] = best_threshold(list(validation_scores.values()), settings.thresholds)
    logger.info("agglomeration thresholds chosen on validation volumes: %s", thresholds)

    results = []
    for name, volume in tests.items():
        affinities = predict(model, volume)
        segmentations = segment_thresholds(affinities, settings.thresholds, voxel_size=target)
        index = settings.thresholds.index(thresholds[name])
        trained = evaluate(segmentations[index], volume.labels)
        baseline = scores_per_threshold(predict(untrained, volume), volume)
        untrained_best = min(baseline, key=lambda s: s.voi)
        target_affinities = affinities_from_labels(
            volume.labels, offsets=settings.model.offsets, label_zero=volume.label_zero
        )
        figure = figure_slice(
            out_dir / f"{name}.png",
            raw=volume.raw,
            affinities=affinities,
            target_affinities=target_affinities.affinities,
            target_mask=target_affinities.mask,
            offsets=settings.model.offsets,
            segmentation=segmentations[index],
            title=f"{name} ({'training domain, held-out volume' if name in training else 'unseen domain'})",
        )
        results.append(
            DomainResult(
                domain=name,
                role="train" if name in training else "unseen",
                trained=trained,
                untrained=untrained_best,
                figure=figure.name,
                threshold=thresholds[name],
            )
        )
    total_seconds = time.perf_counter() - started
    write_report(
        out_dir,
        results,
        settings=settings,
        thresholds=thresholds,
        train_seconds=train_seconds,
        total_seconds=total_seconds,
        quick=quick,
    )
    return results


def results_table(results: list[DomainResult]) -> str:
    lines = [
        "| domain | role | threshold | VOI split | VOI merge | ARAND | untrained VOI split | untrained VOI merge | untrained ARAND |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.domain} | {r.role} | {r.threshold:.2f} | {r.trained.voi_split:.3f} | {r.trained.voi_merge:.3f} | {r.trained.arand:.3f} "
            f"| {r.untrained.voi_split:.3f} | {r.untrained.voi_merge:.3f} | {r.untrained.arand:.3f} |"
        )
    return "\n".join(lines)


def write_report(
    out_dir: Path, results, *, settings: DemoSettings, thresholds, train_seconds, total_seconds, quick
) -> None:
    domain_lines = "\n".join(
        f"- **{name}**: {PRESETS[name].description} (voxel size {PRESETS[name].voxel_size} nm)"
        for name in (*settings.train_domains, settings.unseen_domain)
    )
    figures = "\n\n".join(f"### {r.domain}\n\n![{r.domain}]({r.figure})" for r in results)
    text = f"""# neuropil demo{" (quick)" if quick else ""}

One U-Net (depth {settings.model.depth}, base {settings.model.base_channels} channels) trained for
{settings.train.iterations} iterations on {len(settings.train_domains)} synthetic domains, all rescaled to
{settings.target_voxel_size} nm (z, y, x); each sample picks a domain uniformly, then a volume.
Segmentation: watershed fragments, then mean-affinity agglomeration at the threshold chosen on the
validation volume of each training domain (the unseen domain has no labels to choose with: it gets
the threshold best over all validation volumes). Scores are on held-out volumes; voxels where
the ground truth is 0 are not scored. The untrained network (same architecture, initial weights) is
scored at its best threshold on the test volume itself, which flatters it.

Training took {train_seconds:.0f} s; the whole demo {total_seconds:.0f} s.

## Domains

{domain_lines}

## Results

{results_table(results)}

## Predictions

Affinities black (0) to pale blue-white (1); red where the ground-truth affinity is 1. White without
red: a missed boundary; red on dark: an invented one.

{figures}
"""
    write_text_atomic(out_dir / "report.md", text)
    payload = {
        "thresholds": thresholds,
        "train_seconds": train_seconds,
        "total_seconds": total_seconds,
        "quick": quick,
        "results": [
            {"domain": r.domain, "role": r.role, "trained": r.trained.as_dict(), "untrained": r.untrained.as_dict()}
            for r in results
        ],
    }
    write_text_atomic(out_dir / "results.json", json.dumps(payload, indent=2))
